/* The benchmark workload.
 *
 *   workload [PAIRS] [--wait] [--advise]     (default 200000 pairs)
 *       PAIRS times, map 64 KiB and unmap it, through a 3-deep call chain;
 *       with --advise, also make it reserved and accessible again
 *       (mprotect twice) and give its pages back (madvise DONTNEED) before
 *       unmapping. Times itself and prints nanoseconds per pair.
 *   workload --regions N
 *       maps N single pages, one call each, touches them, says "mapped",
 *       and waits for a line on stdin: what sampling resident memory costs.
 *
 * With --wait (and --regions) it says "ready" and waits for a line on stdin
 * first, so a tracer can attach before the work.
 *
 * Built with -O2 and no frame pointers, as distributions build code. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define LEN (64 * 1024)

static int advise;

__attribute__((noinline)) int level3(void)
{
    char *p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    if (advise && (mprotect(p, LEN, PROT_NONE) != 0 ||
                   mprotect(p, LEN, PROT_READ | PROT_WRITE) != 0 ||
                   madvise(p, LEN, MADV_DONTNEED) != 0))
        return -1;
    return munmap(p, LEN);
}

__attribute__((noinline)) int level2(void) { return level3() + 1; }
__attribute__((noinline)) int level1(void) { return level2() + 1; }

static int wait_for_line(const char *say)
{
    char line[16];
    printf("%s\n", say);
    fflush(stdout);
    return fgets(line, sizeof line, stdin) ? 0 : -1;
}

static int regions(long count)
{
    if (wait_for_line("ready") != 0)
        return 2;
    for (long i = 0; i < count; i++) {
        char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return 1;
        p[0] = 1;
    }
    return wait_for_line("mapped") != 0 ? 2 : 0;
}

int main(int argc, char **argv)
{
    if (argc > 2 && strcmp(argv[1], "--regions") == 0)
        return regions(atol(argv[2]));
    long pairs = argc > 1 ? atol(argv[1]) : 200000;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--wait") == 0 && wait_for_line("ready") != 0)
            return 2;
        if (strcmp(argv[i], "--advise") == 0)
            advise = 1;
    }
    struct timespec start, end;
    long failures = 0;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long i = 0; i < pairs; i++)
        failures += level1() != 2;
    clock_gettime(CLOCK_MONOTONIC, &end);
    double ns = (end.tv_sec - start.tv_sec) * 1e9 + (end.tv_nsec - start.tv_nsec);
    printf("pairs=%ld failures=%ld ns_per_pair=%.1f\n", pairs, failures, ns / pairs);
    return failures != 0;
}
