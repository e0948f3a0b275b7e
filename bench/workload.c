/* The benchmark workload: PAIRS times, map 64 KiB and unmap it, through a
 * 3-deep call chain; it times itself and prints nanoseconds per pair.
 *
 *   workload [PAIRS] [--wait]   (default 200000)
 *
 * With --wait it says "ready" and waits for a line on stdin before the
 * loop, so a tracer can attach first.
 *
 * Built with -O2 and no frame pointers, as distributions build code. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define LEN (64 * 1024)

__attribute__((noinline)) int level3(void)
{
    char *p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    return munmap(p, LEN);
}

__attribute__((noinline)) int level2(void) { return level3() + 1; }
__attribute__((noinline)) int level1(void) { return level2() + 1; }

int main(int argc, char **argv)
{
    long pairs = argc > 1 ? atol(argv[1]) : 200000;
    if (argc > 2 && strcmp(argv[2], "--wait") == 0) {
        char line[16];
        printf("ready\n");
        fflush(stdout);
        if (!fgets(line, sizeof line, stdin))
            return 2;
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
