// The launcher of cuda_emu.h: runs a kernel's grid on the CPU, block after
// block in a shuffled order, each block's threads as OS threads.
#ifndef TESSERA_CUDA_EMU_LAUNCH_H
#define TESSERA_CUDA_EMU_LAUNCH_H

namespace emu {

// The device's limits the launcher checks (sm_80 and sm_90 alike).
constexpr unsigned kMaxThreads = 1024, kMaxBlockZ = 64, kMaxGridYZ = 65535;

// Seed of the block order: EMU_SEED, or a fixed default so a run repeats.
inline uint64_t seed() {
    const char* e = std::getenv("EMU_SEED");
    return e ? std::strtoull(e, nullptr, 0) : 0x7e55e7a5eedull;
}

// Runs kernel<<<grid, block, shared_bytes>>>(args...) to completion.
template <typename... P, typename... A>
void launch(dim3 grid, dim3 block, unsigned shared_bytes, void (*kernel)(P...), A... args) {
    static_assert(sizeof...(P) == sizeof...(A), "kernel argument count");
    const unsigned threads = block.x * block.y * block.z;
    if (threads == 0 || threads > kMaxThreads || block.z > kMaxBlockZ) {
        fail("launch: block %ux%ux%u is not a valid CUDA block", block.x, block.y, block.z);
    }
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > kMaxGridYZ || grid.z > kMaxGridYZ) {
        fail("launch: grid %ux%ux%u is not a valid CUDA grid", grid.x, grid.y, grid.z);
    }
    if (shared_bytes != 0) fail("launch: dynamic shared memory (%u bytes) is not emulated", shared_bytes);

    std::vector<uint3> order;
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) order.push_back({x, y, z});
    std::mt19937_64 rng(seed());
    std::shuffle(order.begin(), order.end(), rng);

    for (const uint3& b : order) {
        poison_shared();
        Block state((int)threads);
        std::vector<std::thread> pool;
        pool.reserve(threads);
        for (unsigned z = 0; z < block.z; ++z)
            for (unsigned y = 0; y < block.y; ++y)
                for (unsigned x = 0; x < block.x; ++x) {
                    pool.emplace_back([&, x, y, z] {
                        threadIdx = {x, y, z};
                        blockIdx = b;
                        blockDim = block;
                        gridDim = grid;
                        tl_block = &state;
                        kernel(static_cast<P>(args)...);
                        // A returned thread leaves its block's barriers.
                        state.barrier.leave();
                        my_warp().leave(my_lane());
                    });
                }
        for (std::thread& t : pool) t.join();
    }
}

}  // namespace emu

#endif  // TESSERA_CUDA_EMU_LAUNCH_H
