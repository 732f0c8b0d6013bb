"""Bytes autograd keeps between forward and backward, measured with saved-tensor hooks.

Every tensor autograd saves passes the pack hook; storages are counted once (views share one).
``saved_bytes`` excludes parameters, buffers and the input batch; ``with_params_bytes`` adds the
parameter and buffer storages that were saved (the input batch stays excluded in both). Only what
ops save through autograd is seen, so ops must save through ``save_for_backward``.
"""
import torch
import torch.nn.functional as F


def _storage(t):
    s = t.untyped_storage()
    return s.data_ptr(), s.nbytes()


def measure_saved(model, x, y):
    """``{"saved_bytes", "with_params_bytes"}`` for one forward (model + loss) of ``(x, y)``."""
    owned = {_storage(t)[0] for t in list(model.parameters()) + list(model.buffers())}
    batch = _storage(x)[0]
    saved = {}

    def pack(t):
        ptr, nbytes = _storage(t)
        if ptr and ptr != batch:
            saved[ptr] = max(saved.get(ptr, 0), nbytes)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    loss = F.cross_entropy(out, y)
    loss.backward()
    model.zero_grad(set_to_none=True)
    activations = sum(n for ptr, n in saved.items() if ptr not in owned)
    return {"saved_bytes": activations, "with_params_bytes": sum(saved.values())}
