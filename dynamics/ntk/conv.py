"""Per-sample parameter Jacobians of a 2-D convolution from its input and output-gradients.

For z = conv2d(a, W) + b with stride s, padding q and dilation d (groups = 1), unfolding the input
into its receptive fields U_n = unfold(a_n) (Cin·kh·kw, L), one column per output position, gives
z_n = W_mat U_n + b 1ᵀ with W_mat = W.reshape(Cout, Cin·kh·kw). With g_{n,o} = ∂f_o(x_n)/∂z_n
reshaped to (Cout, L), the chain rule gives the per-sample, per-output Jacobians

    ∂f_o(x_n)/∂W_mat = g_{n,o} U_nᵀ   (Cout, Cin·kh·kw),        ∂f_o(x_n)/∂b = g_{n,o} 1   (Cout,),

so a convolution's block of the NTK is the Gram matrix of these rows, Σ_o Θ[n,m,o,o] =
Σ_o ⟨J_{n,o}, J_{m,o}⟩ (traced), at a cost of c·O·Cout·L·Cin·kh·kw per chunk of c samples instead of a
vmap over per-sample autograd graphs. Reference: the unfold ("im2col") form of convolution
(Chellapilla et al. 2006); as a structured NTK derivative: Novak et al. 2022, "Fast finite width
neural tangent kernel".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def is_plain_conv2d(module: nn.Module) -> bool:
    """A ``nn.Conv2d`` whose forward is the library's, with groups = 1, zero padding given as numbers."""
    return (isinstance(module, nn.Conv2d) and type(module).forward is nn.Conv2d.forward
            and module.groups == 1 and module.padding_mode == "zeros" and not isinstance(module.padding, str))


def conv2d_jacobian(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per trained parameter ("weight", "bias") the Jacobian J (c, O, P_k) = ∂f_o(x_n)/∂θ_k.

    Shapes: ``a`` the layer input (c, Cin, H, W); ``g`` the output-gradients (c, O, Cout, H', W').
    The weight block is flattened in W's own (Cout, Cin, kh, kw) order.
    """
    c, n_out = g.shape[:2]
    g = g.reshape(c, n_out, module.out_channels, -1)                     # (c, O, Cout, L)
    out = {}
    if module.weight.requires_grad:
        fields = F.unfold(a, module.kernel_size, dilation=module.dilation, padding=module.padding,
                          stride=module.stride)                           # (c, Cin·kh·kw, L)
        out["weight"] = torch.einsum("nocl,nkl->nock", g, fields).reshape(c, n_out, -1)
    if module.bias is not None and module.bias.requires_grad:
        out["bias"] = g.sum(-1)
    return out


def conv2d_gradient(module: nn.Conv2d, jacobian: dict[str, torch.Tensor], v: torch.Tensor) -> dict[str, torch.Tensor]:
    """Σ_n Σ_o v[n, o] J_k[n, o] in each trained parameter's shape, for J = :func:`conv2d_jacobian`."""
    return {name: torch.einsum("no,nop->p", v, j).reshape(getattr(module, name).shape)
            for name, j in jacobian.items()}
