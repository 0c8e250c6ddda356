"""Window geometry as ``@triton.jit`` helpers, shared by every kernel: the Triton twin of swin_fused/geometry.py.

Frames: a *window-frame* position ``p`` is where a token sits after the cyclic shift (and padding), i.e. the
coordinates windows are cut from; the *map* position is where the token lives in the caller's natural
``[B, H, W, C]`` layout. The kernels never build a rolled or partitioned copy: every load and store goes
through :func:`map_position`.
"""
import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def in_window_coords(tok, WW: tl.constexpr):
    """In-window token index (row-major) -> its (row, column) in the window; the same in every window."""
    return tok // WW, tok % WW


@triton.jit
def window_frame_position(win, tok, n_win_w, WH: tl.constexpr, WW: tl.constexpr):
    """Window ``win`` (row-major over the padded map) and in-window tokens ``tok`` -> window-frame (py, px)."""
    ty, tx = in_window_coords(tok, WW)
    return (win // n_win_w) * WH + ty, (win % n_win_w) * WW + tx


@triton.jit
def map_position(p, shift, size, padded, SHIFT_BEFORE_PAD: tl.constexpr):
    """Window-frame position -> map position along one axis, and whether it is a real (unpadded) token.

    Pad-then-shift (package / torchvision order): the padded map is rolled, so p reads (p + s) mod padded,
    which is a padding token when it lands at or beyond ``size``. Shift-then-pad (timm): the unpadded map is
    rolled and padding is appended, so positions p < size read (p + s) mod size and the rest are padding.
    """
    if SHIFT_BEFORE_PAD:
        real = p < size
        src = tl.where(real, (p + shift) % size, p)
    else:
        src = (p + shift) % padded
        real = src < size
    return src, real


@triton.jit
def region_part(p, padded, window, shift):
    """Which of the three shift-mask stripes [0, P-w), [P-w, P-s), [P-s, P) window-frame position p is in."""
    return (p >= padded - window).to(tl.int32) + (p >= padded - shift).to(tl.int32)


@triton.jit
def region_id(py, px, Hp, Wp, WH: tl.constexpr, WW: tl.constexpr, shift_h, shift_w):
    """Shift-mask region id (3 * row stripe + column stripe); tokens of different regions get MASK_VALUE."""
    return 3 * region_part(py, Hp, WH, shift_h) + region_part(px, Wp, WW, shift_w)


@triton.jit
def relative_table_row(ty_q, tx_q, ty_k, tx_k, TWH: tl.constexpr, TWW: tl.constexpr):
    """Row of the relative-position table for query/key in-window coordinates (broadcast against each other:
    ``[M, 1]`` queries and ``[1, N]`` keys give an ``[M, N]`` tile, ``[1, M]`` and ``[N, 1]`` its transpose).

    ``(dy + TWh - 1) * (2 TWw - 1) + (dx + TWw - 1)``, with (TWh, TWw) the window the table was built for
    (>= the window in use: a smaller window reads the table's central rows).
    """
    return (ty_q - ty_k + TWH - 1) * (2 * TWW - 1) + (tx_q - tx_k + TWW - 1)


@triton.jit
def relative_key(ty_q, tx_q, row, WH: tl.constexpr, WW: tl.constexpr, TWH: tl.constexpr, TWW: tl.constexpr):
    """Inverse of :func:`relative_table_row`: the in-window key token that query (ty_q, tx_q) pairs with in
    table row ``row`` (shapes broadcast), and whether that key is inside the window."""
    ty_k = ty_q - (row // (2 * TWW - 1) - (TWH - 1))
    tx_k = tx_q - (row % (2 * TWW - 1) - (TWW - 1))
    inside = (ty_k >= 0) & (ty_k < WH) & (tx_k >= 0) & (tx_k < WW)
    return ty_k * WW + tx_k, inside


@triton.jit
def token_tile(b, win, offs, n_win_w, H, W, Hp, Wp, shift_h, shift_w,
               WH: tl.constexpr, WW: tl.constexpr, SHIFT_BEFORE_PAD: tl.constexpr):
    """Everything a kernel needs about a tile of in-window tokens ``offs`` of window ``win`` of image ``b``.

    Returns ``tok``, the int64 row of each token in the caller's ``[B * H * W, channels]`` map (valid for
    real tokens only), ``real`` (in the window and not padding), ``valid`` (offs < Wh * Ww) and the shift-mask
    region id. (The in-window coordinates, which the bias depends on, are the same in every window.)
    """
    valid = offs < WH * WW
    py, px = window_frame_position(win, offs, n_win_w, WH, WW)
    sy, real_y = map_position(py, shift_h, H, Hp, SHIFT_BEFORE_PAD)
    sx, real_x = map_position(px, shift_w, W, Wp, SHIFT_BEFORE_PAD)
    region = region_id(py, px, Hp, Wp, WH, WW, shift_h, shift_w)
    tok = (b.to(tl.int64) * H + sy) * W + sx
    return tok, valid & real_y & real_x, valid, region
