// CUDA emulation for host C++: lets the unmodified kernels/*.cu compile with
// g++ and run on the CPU, one OS thread per CUDA thread, so that the
// sanitizers (ThreadSanitizer, AddressSanitizer + UBSan) see the kernels'
// memory accesses and their synchronization.
//
// What is emulated, and how:
//   - threadIdx, blockIdx, blockDim, gridDim: thread-locals set before a
//     thread enters the kernel.
//   - A block: blockDim threads started together; blocks run one after the
//     other, in a shuffled order (EMU_SEED), so a result that depends on block
//     order shows. Blocks never overlap, so races between blocks on global
//     memory are not seen; races inside a block are.
//   - __syncthreads: a barrier over the block's threads still running; a
//     thread that returns leaves it (sm_70 and later).
//   - Warp primitives: per-warp scratch and a per-warp barrier over the lanes
//     of the mask. The mask must name the calling lane, lanes that exist and
//     have not exited, and be the same on every lane: anything else is
//     undefined on a GPU and fails here.
//   - __shared__: function-local statics (one copy serves the running block),
//     filled with 0xFF bytes (a NaN in every float) before each block, so a
//     read of shared memory the block did not write shows. The launcher finds
//     them in the program's symbol table (shared_memory.h). Dynamic shared
//     memory is not emulated (no kernel uses it): a launch asking for it fails.
//   - Atomics: std::atomic_ref. Math: the C library's (within a few ulp of
//     CUDA's; the tests compare against references with tolerances).
//   - Watchdog: a barrier that waits longer than EMU_WATCHDOG_S seconds
//     (default 60) reports a deadlock and exits with status 86.
//
// Any failure prints "emu: ..." on stderr and exits with status 86.
#ifndef TESSERA_CUDA_EMU_H
#define TESSERA_CUDA_EMU_H

#include <math.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <type_traits>
#include <vector>

// ---- language: qualifiers and built-in types --------------------------------

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// Shared memory is only legal in device code, where it is the one kind of
// function-local static: so every function-local static of the kernels is
// shared memory, which shared_memory.h finds and poisons between blocks.
#define __shared__ static

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct __attribute__((aligned(16))) uint4 {
    unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

namespace emu {

constexpr int kFailStatus = 86;

[[noreturn]] inline void fail(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::fprintf(stderr, "emu: ");
    std::vfprintf(stderr, fmt, ap);
    va_end(ap);
    std::fprintf(stderr, " (block %u,%u,%u thread %u,%u,%u)\n", blockIdx.x, blockIdx.y,
                 blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
    std::fflush(stderr);
    std::_Exit(kFailStatus);
}

// Not a function-local static: those are taken for shared memory.
inline const long g_watchdog_s = [] {
    const char* e = std::getenv("EMU_WATCHDOG_S");
    return e ? std::max(1L, std::atol(e)) : 60L;
}();

inline std::chrono::seconds watchdog() { return std::chrono::seconds(g_watchdog_s); }

// __syncthreads: a generation barrier whose count is the threads still
// running, so a returned thread no longer holds the others back.
class BlockBarrier {
  public:
    explicit BlockBarrier(int threads) : live_(threads) {}

    void wait() {
        std::unique_lock<std::mutex> l(m_);
        const uint64_t gen = gen_;
        if (++arrived_ == live_) {
            release();
            return;
        }
        while (gen_ == gen) {
            if (cv_.wait_for(l, watchdog()) == std::cv_status::timeout && gen_ == gen) {
                fail("watchdog: deadlock at __syncthreads, %d of %d running threads arrived",
                     arrived_, live_);
            }
        }
    }

    // The calling thread returned from the kernel.
    void leave() {
        std::lock_guard<std::mutex> l(m_);
        --live_;
        if (arrived_ > 0 && arrived_ == live_) release();
    }

  private:
    void release() {
        arrived_ = 0;
        ++gen_;
        cv_.notify_all();
    }

    std::mutex m_;
    std::condition_variable cv_;
    int live_;
    int arrived_ = 0;
    uint64_t gen_ = 0;
};

// One warp: the barrier of its warp primitives and their exchange slots.
class Warp {
  public:
    explicit Warp(unsigned lanes) : present_(lanes) {}

    // Barrier over the lanes of `mask`, checked as the hardware assumes.
    void sync(unsigned mask, int lane) {
        const unsigned bit = 1u << lane;
        if (!(mask & bit)) fail("warp primitive with mask %08x called by lane %d outside it", mask, lane);
        if (mask & ~present_) fail("warp mask %08x names lanes past the block (lanes %08x)", mask, present_);
        std::unique_lock<std::mutex> l(m_);
        if (mask & exited_) fail("warp mask %08x names lanes that exited (%08x)", mask, exited_);
        if (arrived_ != 0 && mask != mask_) {
            fail("warp lanes disagree on the mask: %08x here, %08x waiting", mask, mask_);
        }
        mask_ = mask;
        arrived_ |= bit;
        const uint64_t gen = gen_;
        if (arrived_ == mask) {
            arrived_ = 0;
            ++gen_;
            cv_.notify_all();
            return;
        }
        while (gen_ == gen) {
            if (cv_.wait_for(l, watchdog()) == std::cv_status::timeout && gen_ == gen) {
                fail("watchdog: deadlock in a warp primitive, lanes %08x of mask %08x arrived",
                     arrived_, mask);
            }
            if (gen_ == gen && (mask_ & exited_)) {
                fail("a lane named by warp mask %08x exited while the others waited", mask_);
            }
        }
    }

    void leave(int lane) {
        std::lock_guard<std::mutex> l(m_);
        exited_ |= 1u << lane;
        if (arrived_ != 0 && (mask_ & (1u << lane))) cv_.notify_all();
    }

    uint64_t slot[32];

  private:
    std::mutex m_;
    std::condition_variable cv_;
    const unsigned present_;
    unsigned exited_ = 0;
    unsigned arrived_ = 0;
    unsigned mask_ = 0;
    uint64_t gen_ = 0;
};

struct Block {
    explicit Block(int threads) : barrier(threads) {
        for (int w = 0; w < (threads + 31) / 32; ++w) {
            const int lanes = std::min(32, threads - 32 * w);
            warps.emplace_back(new Warp(lanes == 32 ? 0xffffffffu : (1u << lanes) - 1u));
        }
    }
    BlockBarrier barrier;
    std::vector<std::unique_ptr<Warp>> warps;
};

inline thread_local Block* tl_block = nullptr;

inline int linear_tid() {
    return (int)(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
}
inline Warp& my_warp() { return *tl_block->warps[linear_tid() / 32]; }
inline int my_lane() { return linear_tid() % 32; }

// Every lane of `mask` publishes `v`; lane `src(lane)` is read, or the
// caller's own value where `src` is -1 (shuffles past the warp's edge).
template <typename T, typename Src>
T exchange(unsigned mask, T v, Src src) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a wide type");
    Warp& w = my_warp();
    const int lane = my_lane();
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    w.slot[lane] = bits;
    w.sync(mask, lane);
    const int s = src(lane);
    T out = v;
    if (s >= 0) {
        if (!(mask & (1u << s))) fail("shuffle reads lane %d outside mask %08x", s, mask);
        bits = w.slot[s];
        std::memcpy(&out, &bits, sizeof(T));
    }
    w.sync(mask, lane);  // nobody overwrites a slot before every lane read it
    return out;
}

inline void check_width(int width) {
    if (width != 32) fail("shuffle width %d: only whole warps are emulated", width);
}

}  // namespace emu

// ---- synchronization --------------------------------------------------------

inline void __syncthreads() { emu::tl_block->barrier.wait(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu::my_warp().sync(mask, emu::my_lane()); }

template <typename T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    emu::check_width(width);
    return emu::exchange(mask, v, [src](int) { return src & 31; });
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    emu::check_width(width);
    return emu::exchange(mask, v, [lane_mask](int lane) { return (lane ^ lane_mask) & 31; });
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    emu::check_width(width);
    return emu::exchange(mask, v, [delta](int lane) { return lane + (int)delta < 32 ? lane + (int)delta : -1; });
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    emu::check_width(width);
    return emu::exchange(mask, v, [delta](int lane) { return lane - (int)delta >= 0 ? lane - (int)delta : -1; });
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
    emu::Warp& w = emu::my_warp();
    const int lane = emu::my_lane();
    w.slot[lane] = pred != 0;
    w.sync(mask, lane);
    unsigned out = 0;
    for (int l = 0; l < 32; ++l) {
        if ((mask >> l) & 1u) out |= (unsigned)w.slot[l] << l;
    }
    w.sync(mask, lane);
    return out;
}
inline int __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) == mask; }
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }

// ---- atomics ----------------------------------------------------------------

template <typename T>
T atomicAdd(T* p, T v) { return std::atomic_ref<T>(*p).fetch_add(v); }
template <typename T>
T atomicSub(T* p, T v) { return std::atomic_ref<T>(*p).fetch_sub(v); }
template <typename T>
T atomicExch(T* p, T v) { return std::atomic_ref<T>(*p).exchange(v); }
template <typename T>
T atomicCAS(T* p, T expected, T desired) {
    std::atomic_ref<T>(*p).compare_exchange_strong(expected, desired);
    return expected;  // the old value either way
}
template <typename T>
T atomicMax(T* p, T v) {
    std::atomic_ref<T> a(*p);
    T old = a.load();
    while (old < v && !a.compare_exchange_weak(old, v)) {}
    return old;
}
template <typename T>
T atomicMin(T* p, T v) {
    std::atomic_ref<T> a(*p);
    T old = a.load();
    while (v < old && !a.compare_exchange_weak(old, v)) {}
    return old;
}

// ---- math and bit casts -----------------------------------------------------

inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }

#include "shared_memory.h"
#include "launch.h"

#endif  // TESSERA_CUDA_EMU_H
