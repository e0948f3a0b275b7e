/* liblab: a stand-in for a library with memory hooks, such as UCX's UCM.
 * Like ucm_orig_mmap_syscall, it asks the kernel for memory through raw
 * syscall(SYS_mmap, ...), so heap profilers never see it, and tools that
 * hook or trace libc's mmap() see only libc's syscall(). */
#define _GNU_SOURCE
#include <stddef.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

void *lab_region_get(size_t len)
{
    long p = syscall(SYS_mmap, NULL, len, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == -1 ? NULL : (void *)p;
}

int lab_region_put(void *p, size_t len)
{
    /* Checking the result keeps this a real call (not a tail call), as in
     * ucm_orig_munmap_syscall, so the syscall's caller is this library. */
    return syscall(SYS_munmap, p, len) == 0 ? 0 : -1;
}
