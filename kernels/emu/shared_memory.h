// Finds the kernels' __shared__ arrays, function-local statics in the
// emulation (cuda_emu.h), in the program's own symbol table, so that the
// launcher can poison them before every block.
#ifndef TESSERA_CUDA_EMU_SHARED_MEMORY_H
#define TESSERA_CUDA_EMU_SHARED_MEMORY_H

#include <elf.h>
#include <link.h>

#include <string>

namespace emu {

struct SharedArray {
    char* at;
    size_t size;
    std::string symbol;
};

// The main program's load address (position-independent executables).
inline uintptr_t load_bias() {
    uintptr_t bias = 0;
    dl_iterate_phdr(
        [](dl_phdr_info* info, size_t, void* out) {
            *static_cast<uintptr_t*>(out) = info->dlpi_addr;
            return 1;  // the first object is the program itself
        },
        &bias);
    return bias;
}

// Whether a local static named `name` (mangled "_ZZ...") belongs to the
// kernels rather than to the C++ library or to this emulation.
inline bool kernel_static(const char* name) {
    static const char* const kNotKernels[] = {"_ZZNSt", "_ZZNKSt", "_ZZSt", "_ZZN9__gnu_cxx", "_ZZN3emu"};
    if (std::strncmp(name, "_ZZ", 3) != 0) return false;
    for (const char* p : kNotKernels) {
        if (std::strncmp(name, p, std::strlen(p)) == 0) return false;
    }
    return true;
}

// Every function-local static object of the kernels: name, address, size.
inline std::vector<SharedArray> find_shared_arrays() {
    FILE* f = std::fopen("/proc/self/exe", "rb");
    if (!f) fail("cannot read /proc/self/exe for the shared arrays");
    std::vector<char> elf;
    char buf[1 << 16];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) elf.insert(elf.end(), buf, buf + n);
    std::fclose(f);
    if (elf.size() < sizeof(Elf64_Ehdr)) fail("/proc/self/exe: not an ELF file");
    const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(elf.data());
    if (eh->e_shoff + (size_t)eh->e_shnum * sizeof(Elf64_Shdr) > elf.size()) fail("/proc/self/exe: bad section table");
    const auto* sh = reinterpret_cast<const Elf64_Shdr*>(elf.data() + eh->e_shoff);
    const uintptr_t bias = load_bias();
    std::vector<SharedArray> out;
    for (int i = 0; i < eh->e_shnum; ++i) {
        if (sh[i].sh_type != SHT_SYMTAB) continue;
        const Elf64_Shdr& strtab = sh[sh[i].sh_link];
        const auto* sym = reinterpret_cast<const Elf64_Sym*>(elf.data() + sh[i].sh_offset);
        const size_t count = sh[i].sh_size / sizeof(Elf64_Sym);
        for (size_t s = 0; s < count; ++s) {
            if (ELF64_ST_TYPE(sym[s].st_info) != STT_OBJECT || sym[s].st_size == 0) continue;
            const char* name = elf.data() + strtab.sh_offset + sym[s].st_name;
            if (!kernel_static(name)) continue;
            out.push_back({reinterpret_cast<char*>(bias + sym[s].st_value), sym[s].st_size, name});
        }
    }
    if (out.empty()) fail("no __shared__ arrays in the symbol table (a stripped program?)");
    return out;
}

// Fills every shared array with 0xFF bytes: a NaN in every float and an
// implausible value in every integer.
inline void poison_shared() {
    static const std::vector<SharedArray> arrays = [] {
        std::vector<SharedArray> found = find_shared_arrays();
        if (std::getenv("EMU_LIST_SHARED")) {
            for (const SharedArray& a : found) std::fprintf(stderr, "emu: shared %zu %s\n", a.size, a.symbol.c_str());
        }
        return found;
    }();
    for (const SharedArray& a : arrays) std::memset(a.at, 0xFF, a.size);
}

}  // namespace emu

#endif  // TESSERA_CUDA_EMU_SHARED_MEMORY_H
