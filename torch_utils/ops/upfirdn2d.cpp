// Python binding and argument checks for the upfirdn2d CUDA kernel (see upfirdn2d.h).

#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>
// c10's stream header, not ATen/cuda/CUDAContext.h: that one pulls in cuSPARSE/cuBLAS headers,
// which minimal CUDA toolkits (nvcc + cudart only) do not ship.
#include <c10/cuda/CUDAStream.h>
#include <limits>
#include "upfirdn2d.h"

namespace {

// Largest element offset reachable in t, as a 64-bit value (strides are never negative in torch).
int64_t max_offset(const torch::Tensor& t)
{
    int64_t off = 0;
    for (int64_t d = 0; d < t.dim(); d++)
        off += (t.size(d) - 1) * t.stride(d);
    return off;
}

bool fits_int32(const torch::Tensor& t)
{
    const int64_t lim = std::numeric_limits<int>::max();
    if (t.numel() > lim || max_offset(t) > lim)
        return false;
    for (int64_t d = 0; d < t.dim(); d++)
        if (t.size(d) > lim || t.stride(d) > lim)
            return false;
    return true;
}

// Floor division that also works for negative numerators (C++ '/' truncates toward zero).
int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (q * b > a) ? q - 1 : q;
}

} // namespace

torch::Tensor upfirdn2d(torch::Tensor x, torch::Tensor f,
    int upx, int upy, int downx, int downy,
    int padx0, int padx1, int pady0, int pady1,
    bool flip, double gain)
{
    // Validate arguments.
    TORCH_CHECK(x.is_cuda(), "upfirdn2d: x must reside on a CUDA device");
    TORCH_CHECK(f.is_cuda() && f.device() == x.device(), "upfirdn2d: f must reside on the same CUDA device as x");
    TORCH_CHECK(x.scalar_type() == torch::kHalf || x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kDouble,
        "upfirdn2d: x must be float16, float32 or float64, got ", x.scalar_type());
    TORCH_CHECK(f.scalar_type() == torch::kFloat, "upfirdn2d: f must be float32, got ", f.scalar_type());
    TORCH_CHECK(x.dim() == 4, "upfirdn2d: x must be rank 4 [N, C, H, W], got rank ", x.dim());
    TORCH_CHECK(f.dim() == 2, "upfirdn2d: f must be rank 2 [fh, fw], got rank ", f.dim());
    TORCH_CHECK(f.size(0) >= 1 && f.size(1) >= 1, "upfirdn2d: f must not be empty");
    TORCH_CHECK(upx >= 1 && upy >= 1, "upfirdn2d: up factors must be at least 1");
    TORCH_CHECK(downx >= 1 && downy >= 1, "upfirdn2d: down factors must be at least 1");
    TORCH_CHECK(fits_int32(x), "upfirdn2d: x is too large for 32-bit indexing");
    TORCH_CHECK(fits_int32(f), "upfirdn2d: f is too large for 32-bit indexing");

    // Output size; computed in 64 bits so absurd padding cannot overflow before the check.
    const int64_t fh = f.size(0), fw = f.size(1);
    const int64_t outW = floor_div(x.size(3) * upx + padx0 + padx1 - fw + downx, downx);
    const int64_t outH = floor_div(x.size(2) * upy + pady0 + pady1 - fh + downy, downy);
    TORCH_CHECK(outW >= 1 && outH >= 1, "upfirdn2d: output would be empty (", outH, "x", outW,
        "); the padded, upsampled input must be at least as large as the filter");

    const c10::cuda::CUDAGuard device_guard(x.device());
    // Same memory format as x, so channels_last networks stay channels_last.
    torch::Tensor y = torch::empty({x.size(0), x.size(1), outH, outW}, x.options(), x.suggest_memory_format());
    TORCH_CHECK(fits_int32(y), "upfirdn2d: output is too large for 32-bit indexing");
    if (y.numel() == 0)
        return y; // N == 0 or C == 0: nothing to launch

    UpFirDn2dParams p;
    p.x = x.data_ptr();
    p.f = f.data_ptr<float>();
    p.y = y.data_ptr();
    p.upx = upx;      p.upy = upy;
    p.downx = downx;  p.downy = downy;
    p.padx0 = padx0;  p.pady0 = pady0;
    p.flip = flip;
    p.gain = gain;
    p.N = (int)x.size(0);  p.C = (int)x.size(1);
    p.inH = (int)x.size(2); p.inW = (int)x.size(3);
    p.outH = (int)outH;     p.outW = (int)outW;
    p.fh = (int)fh;         p.fw = (int)fw;
    p.xStrideN = (int)x.stride(0); p.xStrideC = (int)x.stride(1);
    p.xStrideH = (int)x.stride(2); p.xStrideW = (int)x.stride(3);
    p.yStrideN = (int)y.stride(0); p.yStrideC = (int)y.stride(1);
    p.yStrideH = (int)y.stride(2); p.yStrideW = (int)y.stride(3);
    p.fStrideH = (int)f.stride(0); p.fStrideW = (int)f.stride(1);
    p.channelsFastest = (y.stride(1) == 1 && y.size(1) > 1);

    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND_HALF(x.scalar_type(), "upfirdn2d_cuda", [&] {
        upfirdn2d_launch<scalar_t>(p, stream);
    });
    return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("upfirdn2d", &upfirdn2d, "Upsample, pad, FIR-filter and downsample a [N, C, H, W] CUDA tensor.",
        py::arg("x"), py::arg("f"), py::arg("upx"), py::arg("upy"), py::arg("downx"), py::arg("downy"),
        py::arg("padx0"), py::arg("padx1"), py::arg("pady0"), py::arg("pady1"), py::arg("flip"), py::arg("gain"));
}
