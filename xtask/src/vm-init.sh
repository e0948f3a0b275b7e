#!/bin/busybox sh
# /init of the initramfs `cargo xtask test --vm` boots (xtask/src/vm.rs):
# busybox-static, this script and the modules listed in /modules/load-order.
# It mounts the host's root (shared over virtiofs, tag "hostroot")
# read-only, puts a tmpfs overlay on it so the guest can write (nothing
# reaches the host), mounts what mmap-trace and its tests need, runs the
# command script as root in a chroot of it, and prints the script's exit
# status in a marker line before powering off.
#
# Kernel command line parameters read here:
#   xtvm.run=PATH    host path of the script to run (seen through the share)
#   xtvm.nonce=HEX   in the marker, so the command's output cannot forge it
#   xtvm.tty=0|1     1: the command writes to the console (a tty, colours);
#                    0: into a pipe, as when the host's output is not a
#                    terminal (plain "test result:" lines for CI)
/bin/busybox mkdir -p /bin /proc /sys /dev
/bin/busybox --install -s /bin
export PATH=/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

run= nonce=none tty=0
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        xtvm.run=*) run=${arg#xtvm.run=} ;;
        xtvm.nonce=*) nonce=${arg#xtvm.nonce=} ;;
        xtvm.tty=*) tty=${arg#xtvm.tty=} ;;
    esac
done

# The console is ttyS0: no \n -> \r\n translation, so the host gets the
# command's bytes as they are.
stty -onlcr -opost < /dev/console 2>/dev/null

die() {
    echo "vm-init: $*" > /dev/console
    echo "@@VM-EXIT:$nonce:125@@" > /dev/console
    sync
    poweroff -f
}

# Dependencies first; a module built into this kernel is not in the list.
while read -r module; do
    [ -n "$module" ] && insmod "/modules/$module"
done < /modules/load-order

mkdir -p /lower /rw /newroot
mount -t virtiofs -o ro hostroot /lower || die "cannot mount the host's root (virtiofs)"
# The writable root. /tmp stays the host's /tmp seen through the overlay:
# a working directory under the host's /tmp must stay visible.
mount -t tmpfs -o mode=755 tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot \
    || die "cannot mount the overlay"

R=/newroot
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
mount -t tmpfs -o mode=755 tmpfs $R/run
mount -t bpf -o mode=700 bpf $R/sys/fs/bpf
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup || die "cannot mount cgroup2"
mount -t tracefs tracefs $R/sys/kernel/tracing 2>/dev/null
# QEMU's TCG does not always see the kernel patch a static-key jump that
# another vCPU is executing: every attach or detach of the first program on
# sys_enter flips one in syscall entry, and on 6.1 guests both vCPUs were
# seen spinning for minutes on that jump ("soft lockup", RIP at
# syscall_trace_enter, a 2-byte jmp). Hardware and KVM do not do this.
# Tracepoints that stay enabled never flip: enable the ones mmap-trace
# attaches to as trace events, with the trace buffer off (nothing is
# written), so that its programs join sites already on.
T=$R/sys/kernel/tracing
if [ -w $T/tracing_on ]; then
    echo 0 > $T/tracing_on
    for event in raw_syscalls/sys_enter raw_syscalls/sys_exit sched/sched_process_fork \
        sched/sched_process_exec sched/sched_process_exit; do
        echo 1 > $T/events/$event/enable 2>/dev/null
    done
fi
mount -t debugfs debugfs $R/sys/kernel/debug 2>/dev/null
mount -t securityfs securityfs $R/sys/kernel/security 2>/dev/null
hostname vm
ip link set lo up 2>/dev/null
# Kernels before 5.11 charge BPF maps to the locked-memory limit.
ulimit -l unlimited 2>/dev/null

[ -n "$run" ] || die "no xtvm.run= on the kernel command line"
[ -r "$R$run" ] || die "cannot read $run in the guest"

# stdin is /dev/null: the console carries output only.
if [ "$tty" = 1 ]; then
    chroot $R /bin/sh "$run" < /dev/null > /dev/console 2>&1
    rc=$?
else
    { chroot $R /bin/sh "$run" < /dev/null 2>&1; echo $? > /rc; } | cat > /dev/console
    rc=$(cat /rc)
fi
sync
echo "@@VM-EXIT:$nonce:$rc@@" > /dev/console
poweroff -f
