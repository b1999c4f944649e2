// A standalone program that runs kernels/*.cu on the CPU through cuda_emu.h:
// the tests of crates/tessera-kernel-emu build it (plain, under
// ThreadSanitizer, under AddressSanitizer + UBSan) and drive it with a job
// file. A separate program, not code linked into the Rust test, because
// ThreadSanitizer wants the whole process instrumented.
//
//   driver JOB OUT
//
// JOB (little-endian): "EMU1", u32 buffer count, each buffer as u64 length
// and bytes; u32 launch count, each launch as u32 name length and name,
// u32 grid[3], u32 block[3], u32 dynamic shared bytes, u32 argument count and
// each argument as u32 tag (0 buffer index, 1 int, 2 unsigned, 3 float,
// 4 unsigned long long) and a u64 payload. The launches run in order over the
// same buffers, each buffer allocated to its exact length (so that
// AddressSanitizer sees a read one element past it); OUT gets every buffer
// back as u32 count, then u64 length and bytes each.
#include "cuda_emu.h"

#include <map>
#include <string>
#include <utility>

#include "activation.cu"
#include "embedding.cu"
#include "norm.cu"
#include "rotary.cu"
// The attention kernels, or the copy a test mutated (EMU_ATTENTION_FILE).
#ifdef EMU_ATTENTION_FILE
#include EMU_ATTENTION_FILE
#else
#include "attention.cu"
#endif
#include "selftest.cu"

namespace {

enum Tag : uint32_t { kBuffer = 0, kInt = 1, kUnsigned = 2, kFloat = 3, kU64 = 4 };

struct Arg {
    uint32_t tag;
    uint64_t payload;
};

struct Launch {
    std::string name;
    dim3 grid, block;
    unsigned shared_bytes;
    std::vector<Arg> args;
};

struct Buffer {
    void* data;
    uint64_t len;
};

std::vector<Buffer> g_buffers;

class Reader {
  public:
    explicit Reader(FILE* f) : f_(f) {}
    template <typename T>
    T get() {
        T v;
        if (std::fread(&v, sizeof(T), 1, f_) != 1) emu::fail("job: truncated");
        return v;
    }
    void bytes(void* p, uint64_t n) {
        if (n != 0 && std::fread(p, 1, n, f_) != n) emu::fail("job: truncated buffer");
    }

  private:
    FILE* f_;
};

template <typename T>
T arg_as(const Launch& l, size_t i) {
    const Arg& a = l.args[i];
    auto want = [&](uint32_t tag) {
        if (a.tag != tag) emu::fail("%s: argument %zu has tag %u, the kernel wants %u", l.name.c_str(), i, a.tag, tag);
    };
    if constexpr (std::is_pointer_v<T>) {
        want(kBuffer);
        if (a.payload >= g_buffers.size()) emu::fail("%s: argument %zu: no buffer %llu", l.name.c_str(), i, (unsigned long long)a.payload);
        return reinterpret_cast<T>(g_buffers[a.payload].data);
    } else if constexpr (std::is_same_v<T, int>) {
        want(kInt);
        return (int)(int32_t)(uint32_t)a.payload;
    } else if constexpr (std::is_same_v<T, unsigned>) {
        want(kUnsigned);
        return (unsigned)a.payload;
    } else if constexpr (std::is_same_v<T, float>) {
        want(kFloat);
        const uint32_t bits = (uint32_t)a.payload;
        float f;
        std::memcpy(&f, &bits, 4);
        return f;
    } else {
        static_assert(std::is_same_v<T, unsigned long long>, "unsupported kernel parameter type");
        want(kU64);
        return a.payload;
    }
}

template <typename... P, size_t... I>
void invoke(const Launch& l, void (*kernel)(P...), std::index_sequence<I...>) {
    emu::launch(l.grid, l.block, l.shared_bytes, kernel, arg_as<P>(l, I)...);
}

template <typename... P>
void invoke(const Launch& l, void (*kernel)(P...)) {
    if (l.args.size() != sizeof...(P)) {
        emu::fail("%s: %zu arguments for %zu parameters", l.name.c_str(), l.args.size(), sizeof...(P));
    }
    invoke(l, kernel, std::index_sequence_for<P...>{});
}

#define KERNEL(k) {#k, [](const Launch& l) { invoke(l, k); }}

const std::map<std::string, void (*)(const Launch&)> kKernels = {
    KERNEL(embedding_gather_bf16),
    KERNEL(gather_rows_bf16),
    KERNEL(rms_norm_f32_bf16),
    KERNEL(add_rms_norm_f32_bf16),
    KERNEL(add_normed_rms_norm_f32_bf16),
    KERNEL(head_rms_norm_bf16),
    KERNEL(rotary_cache_write_bf16),
    KERNEL(silu_mul_bf16),
    KERNEL(gelu_tanh_mul_bf16),
    KERNEL(scale_f32),
    KERNEL(softcap_f32),
    KERNEL(paged_attention_d64),
    KERNEL(paged_attention_d80),
    KERNEL(paged_attention_d96),
    KERNEL(paged_attention_d128),
    KERNEL(paged_attention_combine),
    KERNEL(emu_selftest_deadlock),
    KERNEL(emu_selftest_bad_mask),
    KERNEL(emu_selftest_unwritten_shared),
    KERNEL(emu_selftest_block_order),
};

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) emu::fail("usage: %s JOB OUT", argv[0]);
    FILE* in = std::fopen(argv[1], "rb");
    if (!in) emu::fail("cannot open %s", argv[1]);
    Reader r(in);
    if (r.get<uint32_t>() != 0x31554d45u) emu::fail("job: not an EMU1 file");
    const uint32_t nbuf = r.get<uint32_t>();
    for (uint32_t i = 0; i < nbuf; ++i) {
        const uint64_t len = r.get<uint64_t>();
        void* p = std::malloc(len == 0 ? 1 : len);
        if (!p) emu::fail("job: cannot allocate %llu bytes", (unsigned long long)len);
        r.bytes(p, len);
        g_buffers.push_back({p, len});
    }
    std::vector<Launch> launches(r.get<uint32_t>());
    for (Launch& l : launches) {
        l.name.resize(r.get<uint32_t>());
        r.bytes(l.name.data(), l.name.size());
        l.grid.x = r.get<uint32_t>(), l.grid.y = r.get<uint32_t>(), l.grid.z = r.get<uint32_t>();
        l.block.x = r.get<uint32_t>(), l.block.y = r.get<uint32_t>(), l.block.z = r.get<uint32_t>();
        l.shared_bytes = r.get<uint32_t>();
        l.args.resize(r.get<uint32_t>());
        for (Arg& a : l.args) {
            a.tag = r.get<uint32_t>();
            a.payload = r.get<uint64_t>();
        }
    }
    std::fclose(in);

    for (const Launch& l : launches) {
        auto k = kKernels.find(l.name);
        if (k == kKernels.end()) emu::fail("no kernel %s", l.name.c_str());
        k->second(l);
    }

    FILE* out = std::fopen(argv[2], "wb");
    if (!out) emu::fail("cannot create %s", argv[2]);
    std::fwrite(&nbuf, 4, 1, out);
    for (const Buffer& b : g_buffers) {
        std::fwrite(&b.len, 8, 1, out);
        if (b.len != 0) std::fwrite(b.data, 1, b.len, out);
        std::free(b.data);
    }
    if (std::fclose(out) != 0) emu::fail("cannot write %s", argv[2]);
    return 0;
}
