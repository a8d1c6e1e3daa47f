// bias_act: fused bias add + activation + gain + clamp, plus its first and second derivatives.
// Shared between bias_act.cpp (argument checks, allocation, dispatch) and bias_act.cu (kernel).

#pragma once
#include <cuda_runtime_api.h>

// Activation codes, as passed from Python (activation_funcs[name].cuda_idx).
enum BiasActCode
{
    kActLinear = 1,
    kActRelu = 2,
    kActLrelu = 3,
    kActTanh = 4,
    kActSigmoid = 5,
    kActElu = 6,
    kActSelu = 7,
    kActSoftplus = 8,
    kActSwish = 9,
};

// The kernel walks linear memory offsets 0..numel-1. That is valid because x is required to be
// non-overlapping and dense, and xref/yref/dy/y share its exact strides, so one offset names
// the same logical element in all of them, whatever the layout (contiguous, channels_last...).
struct BiasActParams
{
    const void* x;     // grad 0: input; grad 1 and 2: the incoming gradient
    const void* b;     // bias along `dim`, or nullptr (only used when grad == 0)
    const void* xref;  // saved pre-activation (x + b), or nullptr; swish derivatives read it
    const void* yref;  // saved forward output, or nullptr; other derivatives and the clamp mask read it
    const void* dy;    // grad 2: the gradient that the first derivative was taken of, or nullptr (= 1)
    void* y;           // output, same layout as x

    int grad;          // 0: forward, 1: first derivative, 2: second derivative
    int act;           // BiasActCode
    double alpha;      // lrelu slope; elu alpha
    double gain;       // output scale
    double clamp;      // |output| limit; negative means no clamp

    int numel;         // elements in x
    int stepB;         // x.stride(dim): memory distance between consecutive channels
    int sizeB;         // x.size(dim)
    int strideB;       // b.stride(0)
};

// Launches the kernel on `stream` for element type T (c10::Half, float or double).
// Defined (and explicitly instantiated for those three types) in bias_act.cu.
template <typename T>
void bias_act_launch(const BiasActParams& p, cudaStream_t stream);
