/* The lab: a "registration cache" that takes a region from liblab for each
 * request and gives it back when done, except that it forgets every fourth
 * one. Plain libc mmap/munmap traffic runs alongside, in balance.
 *
 *   lab [ROUNDS] [fixed|leaky] [PACE_MS]
 *       ROUNDS: default 64; every 4th round leaks 256 KiB, unless "fixed";
 *       PACE_MS: a pause after each round (default none), so a run can
 *       last long enough to judge its growth. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

void *lab_region_get(size_t len);
int lab_region_put(void *p, size_t len);

#define REGION (256 * 1024)
#define SCRATCH (64 * 1024)

static __attribute__((noinline)) void *cache_register(void)
{
    void *region = lab_region_get(REGION);
    if (region)
        memset(region, 1, REGION);
    return region;
}

static __attribute__((noinline)) void scratch_work(void)
{
    char *scratch = mmap(NULL, SCRATCH, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (scratch == MAP_FAILED)
        return;
    memset(scratch, 2, SCRATCH);
    munmap(scratch, SCRATCH);
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 64;
    int fixed = argc > 2 && strcmp(argv[2], "fixed") == 0;
    long pace_ms = argc > 3 ? atol(argv[3]) : 0;
    struct timespec pace = {pace_ms / 1000, (pace_ms % 1000) * 1000 * 1000};
    int leaked = 0;
    for (int round = 0; round < rounds; round++) {
        if (round > 0 && pace_ms > 0)
            nanosleep(&pace, NULL);
        void *region = cache_register();
        scratch_work();
        if (round % 4 == 3 && !fixed)
            leaked++; /* the bug: this registration is never released */
        else
            lab_region_put(region, REGION);
    }
    printf("lab: %d rounds; liblab.so leaked %d regions, %d bytes (%d KiB)\n",
           rounds, leaked, leaked * REGION, leaked * REGION / 1024);
    return 0;
}
