"""Machines no test can choose: CPUs and llama.cpp builds as their own texts say them."""

from __future__ import annotations

from ocak.system.cpu import CpuInfo, parse_cpuinfo

# Flags as /proc/cpuinfo prints them (trimmed to the ISA part) on the two kinds of machine
# this project meets: an Intel Xeon (Sapphire Rapids class) and an AMD EPYC (Zen 3).
XEON_AMX_FLAGS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr "
    "sse sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology pni "
    "pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand "
    "hypervisor lahf_lm abm 3dnowprefetch fsgsbase bmi1 hle avx2 smep bmi2 erms invpcid rtm "
    "avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd sha_ni avx512bw "
    "avx512vl xsaveopt xsavec xgetbv1 xsaves avx_vnni avx512_bf16 arat avx512vbmi umip "
    "avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq rdpid "
    "cldemote movdiri movdir64b fsrm serialize tsxldtrk amx_bf16 avx512_fp16 amx_tile amx_int8"
)
EPYC_AVX2_FLAGS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr "
    "sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm rep_good nopl cpuid extd_apicid "
    "tsc_known_freq pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 x2apic movbe popcnt aes xsave "
    "avx f16c rdrand hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse "
    "3dnowprefetch osvw topoext invpcid_single ssbd ibrs ibpb stibp vmmcall fsgsbase bmi1 avx2 "
    "smep bmi2 erms invpcid rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 "
    "xsaves clzero xsaveerptr wbnoinvd arat npt nrip_save umip pku ospke vaes vpclmulqdq rdpid"
)


def cpuinfo_text(model: str, flags: str) -> str:
    """Two processors' worth of /proc/cpuinfo, as the kernel writes it."""
    block = (
        "processor\t: {n}\nvendor_id\t: X\ncpu family\t: 6\nmodel name\t: {model}\n"
        "flags\t\t: {flags}\nbugs\t\t: spectre_v1\n\n"
    )
    return "".join(block.format(n=n, model=model, flags=flags) for n in range(2))


def cpu(model: str, flags: str | None) -> CpuInfo:
    """A CpuInfo parsed from a cpuinfo text, or one whose flags are unknown (Windows)."""
    if flags is None:
        return CpuInfo(model, "AMD64", 8, None)
    name, parsed = parse_cpuinfo(cpuinfo_text(model, flags))
    return CpuInfo(name, "x86_64", 2, parsed)


XEON = cpu("Intel(R) Xeon(R) Platinum 8480+", XEON_AMX_FLAGS)
EPYC = cpu("AMD EPYC 7B13 64-Core Processor", EPYC_AVX2_FLAGS)
WINDOWS = cpu("Intel64 Family 6 Model 143 Stepping 8, GenuineIntel", None)

# llama_print_system_info() of llama.cpp built with -march=native on each machine,
# with and without the AMX kernels.
INFO_XEON_NATIVE = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | "
    "BMI2 = 1 | AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | "
    "AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)
INFO_XEON_NO_AMX = INFO_XEON_NATIVE.replace("AMX_INT8 = 1 | ", "")
INFO_EPYC_NATIVE = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
    "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)
