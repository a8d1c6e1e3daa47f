// upfirdn2d: upsample (zero insertion), pad/crop, FIR filter, downsample -- one fused pass.
// Shared between upfirdn2d.cpp (argument checks, allocation, dispatch) and upfirdn2d.cu (kernel).

#pragma once
#include <cuda_runtime_api.h>

// Everything the kernel needs, in plain ints so the struct is trivially copyable to the device.
// Strides are in elements (not bytes), so any strided layout works: NCHW, channels_last, views.
struct UpFirDn2dParams
{
    const void* x;      // input  [N, C, inH, inW], element type T
    const float* f;     // filter [fh, fw], float32
    void* y;            // output [N, C, outH, outW], element type T

    int upx, upy;       // upsampling factors (>= 1)
    int downx, downy;   // downsampling factors (>= 1)
    int padx0, pady0;   // leading padding of the upsampled image (negative = crop)
    bool flip;          // true: correlate with f as is; false: true convolution (f flipped)
    double gain;        // output scale (double so fp64 inputs lose nothing)

    int N, C, inH, inW;
    int outH, outW;
    int fh, fw;

    int xStrideN, xStrideC, xStrideH, xStrideW;
    int yStrideN, yStrideC, yStrideH, yStrideW;
    int fStrideH, fStrideW;

    bool channelsFastest; // true when y is channels_last: consecutive threads then walk C
};

// Launches the kernel on `stream` for element type T (c10::Half, float or double).
// Defined (and explicitly instantiated for those three types) in upfirdn2d.cu.
template <typename T>
void upfirdn2d_launch(const UpFirDn2dParams& p, cudaStream_t stream);
