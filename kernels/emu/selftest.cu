// Kernels that misbehave on purpose, for the emulator's own tests
// (crates/tessera-kernel-emu/tests/emu/harness.rs): each shows that one
// promise of cuda_emu.h holds. Compiled into the driver only, never by NVRTC.

// Lanes 0-15 wait for the whole warp while lanes 16-31 wait at the block
// barrier: a deadlock the watchdog must report.
extern "C" __global__ void emu_selftest_deadlock(int* out) {
    if (threadIdx.x % 32 < 16) {
        __syncwarp(0xffffffffu);
    } else {
        __syncthreads();
    }
    out[threadIdx.x] = 1;
}

// A shuffle whose mask leaves out half of the lanes that call it.
extern "C" __global__ void emu_selftest_bad_mask(int* out) {
    out[threadIdx.x] = __shfl_xor_sync(0x0000ffffu, (int)threadIdx.x, 1);
}

// Thread i reads shared word i that nobody wrote: the poison shows.
// Volatile, or the compiler folds the reads of a static no code writes to 0.
extern "C" __global__ void emu_selftest_unwritten_shared(unsigned* out) {
    __shared__ volatile unsigned never_written[64];
    out[blockIdx.x * blockDim.x + threadIdx.x] = never_written[threadIdx.x];
}

// Each block takes a ticket: out[ticket] = its index, so the order blocks
// ran in shows. Threads past 16 return first and must not hold the barrier.
extern "C" __global__ void emu_selftest_block_order(unsigned* out, unsigned* ticket) {
    __shared__ unsigned mine;
    if (threadIdx.x >= 16) return;
    if (threadIdx.x == 0) mine = atomicAdd(ticket, 1u);
    __syncthreads();
    const unsigned lanes = __ballot_sync(0x0000ffffu, 1);
    const unsigned first = __shfl_sync(0x0000ffffu, mine, 0);
    if (threadIdx.x == 1 && lanes == 0x0000ffffu) out[first] = blockIdx.x;
}
