// bias_act CUDA kernel: one elementwise pass, one thread per element (grid-stride).
//
// grad 0: y   = clamp(gain * act(x + b), -clamp, +clamp)
// grad 1: dx  = x * gain * act'(z) * mask                (x is the incoming gradient)
// grad 2: ddx = x * dy * gain * act''(z) * mask          (x is the incoming gradient of dx)
// Derivatives are written in terms of the saved output yy = yref / gain (so the forward
// pre-activation need not be kept), except swish, whose derivative needs z = xref itself.
// mask is 0 where the forward output was clamped (|yref| >= clamp), else 1.

#include <ATen/AccumulateType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/util/Half.h>
#include <algorithm>
#include "bias_act.h"

namespace {

// Math overloads for the compute type: float for half/float inputs, double for double inputs.
__device__ __forceinline__ float math_exp(float v) { return expf(v); }
__device__ __forceinline__ double math_exp(double v) { return exp(v); }
__device__ __forceinline__ float math_expm1(float v) { return expm1f(v); }
__device__ __forceinline__ double math_expm1(double v) { return expm1(v); }
__device__ __forceinline__ float math_log1p(float v) { return log1pf(v); }
__device__ __forceinline__ double math_log1p(double v) { return log1p(v); }
__device__ __forceinline__ float math_tanh(float v) { return tanhf(v); }
__device__ __forceinline__ double math_tanh(double v) { return tanh(v); }
__device__ __forceinline__ float math_abs(float v) { return fabsf(v); }
__device__ __forceinline__ double math_abs(double v) { return fabs(v); }

// Beyond this |z| exp-based activations are saturated: exp(80) is still finite in float,
// and the saturated values equal the exact ones to well below float precision.
constexpr double kExpRange = 80.0;

constexpr double kSeluScale = 1.0507009873554805;
constexpr double kSeluAlpha = 1.6732632423543772;

// Logistic sigmoid; exp only ever sees a non-positive argument, so it cannot overflow.
template <typename C>
__device__ __forceinline__ C sigmoid(C z)
{
    if (z >= 0)
        return C(1) / (C(1) + math_exp(-z));
    const C e = math_exp(z);
    return e / (C(1) + e);
}

template <typename C>
__device__ __forceinline__ C activation(int act, C z, C alpha)
{
    switch (act)
    {
    case kActRelu:     return (z < 0) ? C(0) : z; // '<' keeps NaN, like torch.relu
    case kActLrelu:    return (z < 0) ? z * alpha : z;
    case kActTanh:     return math_tanh(z);
    case kActSigmoid:  return sigmoid(z);
    case kActElu:      return (z > 0) ? z : alpha * math_expm1(z);
    case kActSelu:     return (z > 0) ? C(kSeluScale) * z : C(kSeluScale * kSeluAlpha) * math_expm1(z);
    case kActSoftplus: return ((z > 0) ? z : C(0)) + math_log1p(math_exp(-math_abs(z))); // stable log(1 + e^z)
    case kActSwish:
        if (z > C(kExpRange)) return z;
        if (z < C(-kExpRange)) return C(0);
        return z * sigmoid(z);
    default:           return z; // linear
    }
}

// act'(z), from the saved output yy (or from z = xref for swish).
template <typename C>
__device__ __forceinline__ C first_derivative(int act, C yy, C z, C alpha)
{
    switch (act)
    {
    case kActRelu:     return (yy > 0) ? C(1) : C(0);
    case kActLrelu:    return (yy > 0) ? C(1) : alpha;
    case kActTanh:     return C(1) - yy * yy;
    case kActSigmoid:  return yy * (C(1) - yy);
    case kActElu:      return (yy > 0) ? C(1) : yy + alpha;
    case kActSelu:     return (yy > 0) ? C(kSeluScale) : yy + C(kSeluScale * kSeluAlpha);
    case kActSoftplus: return C(1) - math_exp(-yy); // = sigmoid(z), since yy = log(1 + e^z)
    case kActSwish:
    {
        if (z > C(kExpRange)) return C(1);
        if (z < C(-kExpRange)) return C(0);
        const C s = sigmoid(z);
        return s + z * s * (C(1) - s);
    }
    default:           return C(1); // linear
    }
}

// act''(z), in the same terms. Piecewise-linear activations have none.
template <typename C>
__device__ __forceinline__ C second_derivative(int act, C yy, C z, C alpha)
{
    switch (act)
    {
    case kActTanh:     return C(-2) * yy * (C(1) - yy * yy);
    case kActSigmoid:  return yy * (C(1) - yy) * (C(1) - C(2) * yy);
    case kActElu:      return (yy > 0) ? C(0) : yy + alpha;
    case kActSelu:     return (yy > 0) ? C(0) : yy + C(kSeluScale * kSeluAlpha);
    case kActSoftplus:
    {
        const C s = C(1) - math_exp(-yy);
        return s * (C(1) - s);
    }
    case kActSwish:
    {
        if (z > C(kExpRange) || z < C(-kExpRange)) return C(0);
        const C s = sigmoid(z);
        return s * (C(1) - s) * (C(2) + z * (C(1) - C(2) * s));
    }
    default:           return C(0); // linear, relu, lrelu
    }
}

template <typename T>
__global__ void bias_act_kernel(const BiasActParams p)
{
    using C = at::acc_type<T, /*is_cuda=*/true>; // float for half and float, double for double
    const T* __restrict__ px = static_cast<const T*>(p.x);
    const T* __restrict__ pb = static_cast<const T*>(p.b);
    const T* __restrict__ pxref = static_cast<const T*>(p.xref);
    const T* __restrict__ pyref = static_cast<const T*>(p.yref);
    const T* __restrict__ pdy = static_cast<const T*>(p.dy);
    T* __restrict__ py = static_cast<T*>(p.y);

    const C alpha = static_cast<C>(p.alpha);
    const C gain = static_cast<C>(p.gain);
    // Clamp at the value T can hold: the saved half output of a clamped element equals
    // half(clamp), which may be just below clamp, and must still count as clamped below.
    const C clamp = static_cast<C>(static_cast<T>(p.clamp));
    const bool use_clamp = (p.clamp >= 0);

    const int64_t step = (int64_t)blockDim.x * gridDim.x;
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < p.numel; idx += step)
    {
        const int i = (int)idx;
        const C x = static_cast<C>(px[i]);
        C out;

        if (p.grad == 0)
        {
            const C b = pb ? static_cast<C>(pb[((i / p.stepB) % p.sizeB) * p.strideB]) : C(0);
            out = activation<C>(p.act, x + b, alpha) * gain;
            if (use_clamp) // ternaries rather than fmin/fmax so NaN stays NaN
                out = (out > clamp) ? clamp : ((out < -clamp) ? -clamp : out);
        }
        else
        {
            const C yref = pyref ? static_cast<C>(pyref[i]) : C(0);
            const C z = pxref ? static_cast<C>(pxref[i]) : C(0);
            const C yy = (gain != 0) ? yref / gain : C(0);
            if (use_clamp && pyref && math_abs(yref) >= clamp)
                out = C(0); // the forward clamp was active: no gradient flows (set, not multiplied, so inf/NaN stay out)
            else if (p.grad == 1)
                out = x * gain * first_derivative<C>(p.act, yy, z, alpha);
            else
            {
                const C dy = pdy ? static_cast<C>(pdy[i]) : C(1);
                out = x * dy * gain * second_derivative<C>(p.act, yy, z, alpha);
            }
        }
        py[i] = static_cast<T>(out);
    }
}

} // namespace

template <typename T>
void bias_act_launch(const BiasActParams& p, cudaStream_t stream)
{
    if (p.numel == 0)
        return;
    const int threads = 256;
    // The kernel loops grid-stride; a few elements per thread amortize the index setup.
    const int64_t blocks = std::min<int64_t>((p.numel + threads * 4 - 1) / (threads * 4), 1 << 16);
    bias_act_kernel<T><<<(unsigned)blocks, threads, 0, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template void bias_act_launch<c10::Half>(const BiasActParams& p, cudaStream_t stream);
template void bias_act_launch<float>(const BiasActParams& p, cudaStream_t stream);
template void bias_act_launch<double>(const BiasActParams& p, cudaStream_t stream);
