"""openrec.ops.kernels: the one-time warning when a CUDA tensor reaches the PyTorch implementation."""
def test_pytorch_fallback_on_cuda_tensors_warns_once():
    from types import SimpleNamespace

    import pytest

    from openrec.ops import kernels
    kernels._state["warned"].discard("probe_op")
    cuda_like = SimpleNamespace(is_cuda=True)
    with pytest.warns(RuntimeWarning, match="probe_op runs on its PyTorch implementation"):
        kernels.warn_pytorch_fallback("probe_op", cuda_like)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kernels.warn_pytorch_fallback("probe_op", cuda_like)  # second time: silent
        kernels.warn_pytorch_fallback("other_op", SimpleNamespace(is_cuda=False))  # CPU: silent
