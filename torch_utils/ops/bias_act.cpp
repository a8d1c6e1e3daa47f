// Python binding and argument checks for the bias_act CUDA kernel (see bias_act.h).

#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>
// c10's stream header, not ATen/cuda/CUDAContext.h: that one pulls in cuSPARSE/cuBLAS headers,
// which minimal CUDA toolkits (nvcc + cudart only) do not ship.
#include <c10/cuda/CUDAStream.h>
#include <limits>
#include "bias_act.h"

namespace {

bool given(const torch::Tensor& t)
{
    return t.defined() && t.numel() > 0;
}

// True if every element sits at the same memory offset in a and b (strides of size-1 dims are irrelevant).
bool same_layout(const torch::Tensor& a, const torch::Tensor& b)
{
    if (a.sizes() != b.sizes())
        return false;
    for (int64_t d = 0; d < a.dim(); d++)
        if (a.size(d) > 1 && a.stride(d) != b.stride(d))
            return false;
    return true;
}

// xref/yref/dy must be addressable with x's memory offsets: same device, dtype, shape, strides.
void check_like_x(const torch::Tensor& t, const torch::Tensor& x, const char* name)
{
    TORCH_CHECK(t.device() == x.device(), "bias_act: ", name, " must reside on the same device as x");
    TORCH_CHECK(t.scalar_type() == x.scalar_type(), "bias_act: ", name, " must have the same dtype as x");
    TORCH_CHECK(t.sizes() == x.sizes(), "bias_act: ", name, " must have the same shape as x");
    TORCH_CHECK(same_layout(t, x), "bias_act: ", name, " must have the same strides (memory layout) as x");
}

} // namespace

torch::Tensor bias_act(torch::Tensor x, torch::Tensor b, torch::Tensor xref, torch::Tensor yref, torch::Tensor dy,
    int grad, int dim, int act, double alpha, double gain, double clamp)
{
    // Validate arguments.
    TORCH_CHECK(x.is_cuda(), "bias_act: x must reside on a CUDA device");
    TORCH_CHECK(x.scalar_type() == torch::kHalf || x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kDouble,
        "bias_act: x must be float16, float32 or float64, got ", x.scalar_type());
    TORCH_CHECK(x.is_non_overlapping_and_dense(), "bias_act: x must be non-overlapping and dense (e.g. contiguous or channels_last)");
    TORCH_CHECK(x.numel() <= std::numeric_limits<int>::max(), "bias_act: x is too large for 32-bit indexing");
    TORCH_CHECK(grad >= 0 && grad <= 2, "bias_act: grad must be 0, 1 or 2, got ", grad);
    TORCH_CHECK(act >= kActLinear && act <= kActSwish, "bias_act: unknown activation code ", act);

    const bool has_b = given(b), has_xref = given(xref), has_yref = given(yref), has_dy = given(dy);
    if (has_b)
    {
        TORCH_CHECK(dim >= 0 && dim < x.dim(), "bias_act: dim ", dim, " is out of range for rank ", x.dim());
        TORCH_CHECK(b.device() == x.device(), "bias_act: b must reside on the same device as x");
        TORCH_CHECK(b.scalar_type() == x.scalar_type(), "bias_act: b must have the same dtype as x");
        TORCH_CHECK(b.dim() == 1 && b.size(0) == x.size(dim), "bias_act: b must have shape [x.size(dim)] = [", x.size(dim), "]");
        TORCH_CHECK(b.stride(0) * (b.size(0) - 1) <= std::numeric_limits<int>::max(), "bias_act: b is too large for 32-bit indexing");
    }
    if (has_xref) check_like_x(xref, x, "xref");
    if (has_yref) check_like_x(yref, x, "yref");
    if (has_dy) check_like_x(dy, x, "dy");

    // Derivatives are expressed in terms of the saved tensors; refuse silently wrong results.
    if (grad > 0 && act == kActSwish)
        TORCH_CHECK(has_xref, "bias_act: the swish derivative needs xref (the saved pre-activation x + b)");
    if (grad > 0 && act != kActSwish && act != kActLinear)
        TORCH_CHECK(has_yref, "bias_act: this activation's derivative needs yref (the saved output)");

    const c10::cuda::CUDAGuard device_guard(x.device());
    torch::Tensor y = torch::empty_like(x); // keeps x's strides since x is non-overlapping and dense
    TORCH_CHECK(same_layout(y, x), "bias_act: internal error, output layout differs from x");
    if (x.numel() == 0)
        return y;

    BiasActParams p;
    p.x = x.data_ptr();
    p.b = (has_b && grad == 0) ? b.data_ptr() : nullptr;
    p.xref = has_xref ? xref.data_ptr() : nullptr;
    p.yref = has_yref ? yref.data_ptr() : nullptr;
    p.dy = has_dy ? dy.data_ptr() : nullptr;
    p.y = y.data_ptr();
    p.grad = grad;
    p.act = act;
    p.alpha = alpha;
    p.gain = gain;
    p.clamp = clamp;
    p.numel = (int)x.numel();
    p.stepB = has_b ? (int)std::max<int64_t>(x.stride(dim), 1) : 1;
    p.sizeB = has_b ? (int)x.size(dim) : 1;
    p.strideB = has_b ? (int)b.stride(0) : 0;

    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND_HALF(x.scalar_type(), "bias_act_cuda", [&] {
        bias_act_launch<scalar_t>(p, stream);
    });
    return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("bias_act", &bias_act, "Fused bias + activation + gain + clamp (grad=0), or its 1st/2nd derivative (grad=1/2).",
        py::arg("x"), py::arg("b"), py::arg("xref"), py::arg("yref"), py::arg("dy"), py::arg("grad"), py::arg("dim"),
        py::arg("act"), py::arg("alpha"), py::arg("gain"), py::arg("clamp"));
}
