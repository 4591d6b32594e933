"""A compact, deliberately naive re-statement of ConvBERT's math, to test the fast model against.

It reads the parameters of a `convbert` model and recomputes the forward pass with explicit
attention (softmax of q k^T), an `unfold`-style window gather and a per-position loop, the way
transformers' and the official TF code spell it out.
"""

import math

import torch
import torch.nn.functional as F


def naive_lightweight_conv(v, kernel):
    """v (B, T, Hn, hs), kernel (B, T, Hn, K) or (Hn, K): loop over positions and taps."""
    B, T, Hn, hs = v.shape
    K = kernel.shape[-1]
    kernel = kernel.expand(B, T, Hn, K)
    out = torch.zeros_like(v)
    for t in range(T):
        for j in range(K):
            s = t + j - K // 2
            if 0 <= s < T:
                out[:, t] += kernel[:, t, :, j, None] * v[:, s]
    return out


def naive_mixed_attention(att, x, keep, mask_conv_padding):
    c_type, Hn, hs = att.conv_type, att.heads, att.head_size
    B, T, d = x.shape
    q, k, v = att.query(x), att.key(x), att.value(x)
    split = lambda t: t.view(B, T, Hn, hs).permute(0, 2, 1, 3)
    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(hs)
    if keep is not None:
        scores = scores + (1.0 - keep[:, None, None, :].float()) * torch.finfo(scores.dtype).min
    ctx = (scores.softmax(-1) @ split(v)).permute(0, 2, 1, 3)  # (B, T, Hn, hs)
    if c_type == "noconv":
        return ctx.reshape(B, T, d)
    zero_pads = keep[..., None].float() if (mask_conv_padding and keep is not None) else torch.ones(B, T, 1)
    xc = x * zero_pads
    if c_type == "sdconv":
        sep = att.key_conv_attn_layer
        w = sep.depthwise.weight  # (d, 1, K)
        ks = F.conv1d(xc.transpose(1, 2), w, padding=w.shape[-1] // 2, groups=d)
        ks = F.conv1d(ks, sep.pointwise.weight) + sep.bias  # (B, A, T)
        kernel = att.conv_kernel_layer(ks.transpose(1, 2) * q)
    elif c_type == "dconv":
        kernel = att.conv_kernel_layer(q)
    else:
        kernel = att.conv_kernel
    K = kernel.shape[-1] if c_type == "lconv" else kernel.shape[-1] // Hn
    kernel = kernel.reshape(*kernel.shape[:-1], -1, K).softmax(-1) if c_type != "lconv" else kernel.softmax(-1)
    vc = (att.conv_out_layer(x) * zero_pads).view(B, T, Hn, hs)
    conv = naive_lightweight_conv(vc, kernel)
    return torch.cat([ctx, conv], dim=2).reshape(B, T, 2 * Hn * hs)


def naive_grouped_linear(layer, x):
    if isinstance(layer, torch.nn.Linear):
        return layer(x)
    G, n_in, _ = layer.weight.shape
    chunks = x.reshape(-1, G, n_in).permute(1, 0, 2)  # (G, N, in/G), as transformers does it
    out = torch.matmul(chunks, layer.weight).permute(1, 0, 2)
    return out.reshape(*x.shape[:-1], -1) + layer.bias


def naive_encoder(model, input_ids, attention_mask=None, token_type_ids=None):
    """Same result as `model(input_ids, attention_mask, token_type_ids).last_hidden_state` for a ConvBertModel."""
    c = model.config
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)
    emb = model.embeddings
    T = input_ids.shape[1]
    x = (
        emb.word_embeddings(input_ids)
        + emb.position_embeddings(torch.arange(T))
        + emb.token_type_embeddings(token_type_ids)
    )
    x = emb.LayerNorm(x)
    if hasattr(model, "embeddings_project"):
        x = model.embeddings_project(x)
    keep = None if attention_mask is None else attention_mask.bool()
    for layer in model.encoder.layer:
        a = naive_mixed_attention(layer.attention["self"], x, keep, c.mask_conv_padding)
        out = layer.attention["output"]
        h = out.LayerNorm(x + out.dense(a))
        inter = F.gelu(naive_grouped_linear(layer.intermediate["dense"], h))
        x = layer.output.LayerNorm(h + naive_grouped_linear(layer.output.dense, inter))
    return x
