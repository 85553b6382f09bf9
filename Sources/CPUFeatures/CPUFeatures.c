// Checks the CPU before any Swift code of `hyperattn` runs. The Swift modules are compiled for
// the x86-64-v3 level (`-target-cpu haswell`), so any function may contain AVX2/FMA instructions;
// this file is compiled for the baseline CPU and runs as a constructor, before `main`.
#include "CPUFeatures.h"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int hyperattn_cpu_has_avx2_fma(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 1;
#endif
}

__attribute__((constructor(101))) static void hyperattn_refuse_old_cpu(void) {
    if (getenv("HYPERATTN_SKIP_CPU_CHECK")) return;
    if (!hyperattn_cpu_has_avx2_fma()) {
        static const char msg[] =
            "hyperattn: error: this CPU lacks AVX2/FMA; hyperattn is built for x86-64-v3 (Haswell or newer). "
            "Rebuild without `-Xswiftc -target-cpu -Xswiftc haswell` for a slow portable binary.\n";
        ssize_t unused = write(2, msg, sizeof msg - 1);
        (void)unused;
        _exit(2);
    }
}
