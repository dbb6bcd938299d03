//! `out = alpha * x + y` over `n` floats, for kaas's WebAssembly backend.
//!
//! The executor calls an exported kernel once per block of its grid, like a CUDA block:
//! first the block index (`bx`, `by`, `bz`) and the block size (`dx`, `dy`, `dz`), then
//! the kernel's `args` in the order the KernelFunction lists them — a buffer as a pointer
//! into the module's exported memory (the executor places buffers after the module's
//! own initial memory, so Rust's stack and statics are untouched), `f32`/`u32`/... by
//! value. The same function's CUDA build receives the same `args` as kernel parameters.
#![no_std]

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

/// One block of saxpy: the elements `[bx * dx, min((bx + 1) * dx, n))`.
///
/// # Safety
/// `x`, `y` and `out` point to at least `n` floats of the module's memory (the executor
/// sizes buffers from the KernelFunction's `buffers`, which the operator checks against
/// the arguments).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn saxpy(
    bx: u32,
    _by: u32,
    _bz: u32,
    dx: u32,
    _dy: u32,
    _dz: u32,
    x: *const f32,
    y: *const f32,
    out: *mut f32,
    alpha: f32,
    n: u32,
) {
    let start = bx.saturating_mul(dx);
    let end = start.saturating_add(dx).min(n);
    for i in start as usize..end as usize {
        // SAFETY: i < n, and every buffer holds n floats (see above).
        unsafe { *out.add(i) = alpha * *x.add(i) + *y.add(i) };
    }
}
