//! A shell script run as root on another kernel: a Debian cloud kernel
//! booted under QEMU, for `cargo xtask test --vm KERNEL`.
//!
//! - The kernel package comes from Debian's archive, through apt with a
//!   configuration of its own (the host's is neither used nor changed).
//! - The initramfs is busybox, `/init` (`vm-init.sh`) and the modules that
//!   reach the host's files. Debian's cloud kernels have no 9p, so the
//!   host's root is shared over virtiofs (bookworm's QEMU ships virtiofsd);
//!   the guest mounts it read-only under a tmpfs overlay. It sees the host's
//!   paths (binaries, fixtures, gdb, libraries), and its writes stay in it.
//! - No usable KVM on these machines: TCG, `-cpu max`.
//! - Output comes back over the serial console, the exit status in a last
//!   line carrying a nonce, so no output of the command can forge it.
//!
//! Everything downloaded or built stays under the cache folder
//! (`target/vm`): `apt-<suite>/` (lists), `debs/`, `kernels/<package>/`
//! (unpacked, with its initramfs), about 135 MB a kernel with its package;
//! `runs/` (one folder a run, for the command script and virtiofsd's
//! socket).

mod kernel;

use std::{
    fs,
    io::{BufRead as _, BufReader, IsTerminal as _, Read as _, Write as _},
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::cmd::describe;

/// The Debian packages the VM needs: QEMU (its qemu-system-common brings
/// virtiofsd) and a static busybox for the initramfs.
pub const PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static"];

/// The kernels `--vm` takes: (name, Debian suite, metapackage).
pub const KERNELS: &[(&str, &str, &str)] = &[
    ("6.1", "bookworm", "linux-image-cloud-amd64"),
    ("6.12", "bookworm", "linux-image-6.12-cloud-amd64"),
    ("5.10", "bullseye", "linux-image-cloud-amd64"),
];

const VIRTIOFSD: &str = "/usr/lib/qemu/virtiofsd";
/// Guest memory: shared with virtiofsd, half of it the overlay's tmpfs.
const MEMORY: &str = "4G";
const CPUS: &str = "2";
/// How long the guest may take to power off after the command finished.
const POWER_OFF: Duration = Duration::from_secs(20);
/// Host environment the command gets, when set.
const PASS_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "TERM",
    "NO_COLOR",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "MMAP_TRACE_LOG",
];

/// A kernel ready to boot.
pub struct Guest {
    /// Its release (`uname -r`), e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    vmlinuz: PathBuf,
    initramfs: PathBuf,
    runs: PathBuf,
}

impl Guest {
    /// Downloads, unpacks and packs what booting `name` (one of
    /// [`KERNELS`]) needs, once; later calls find it in `cache`.
    pub fn prepare(name: &str, cache: &Path) -> anyhow::Result<Guest> {
        let Some(&(_, suite, package)) = KERNELS.iter().find(|k| k.0 == name) else {
            let names: Vec<&str> = KERNELS.iter().map(|k| k.0).collect();
            bail!(
                "no kernel {name} for --vm; choose one of {}",
                names.join(", ")
            );
        };
        let deb = kernel::package(name, suite, package, cache)?;
        let kernel = kernel::Unpacked::new(&deb, &cache.join("kernels"))?;
        let initramfs = kernel.initramfs()?;
        let runs = cache.join("runs");
        fs::create_dir_all(&runs)?;
        Ok(Guest {
            vmlinuz: kernel.root.join(format!("boot/vmlinuz-{}", kernel.release)),
            release: kernel.release,
            initramfs,
            runs,
        })
    }

    /// (major, minor) of the guest's kernel.
    pub fn version(&self) -> Option<(u32, u32)> {
        let number = |part: &str| {
            part.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        let mut parts = self.release.split('.');
        Some((number(parts.next()?)?, number(parts.next()?)?))
    }

    /// Boots, runs `script` (sh) as root in `cwd`, streams its output and
    /// returns its exit status. Fails if the guest dies first, or runs out
    /// of `timeout`.
    pub fn run(&self, cwd: &Path, script: &str, timeout: Duration) -> anyhow::Result<i32> {
        sweep_runs(&self.runs);
        let nonce = nonce()?;
        let run = RunDir(
            self.runs
                .join(format!("run-{}-{nonce}", std::process::id())),
        );
        fs::create_dir_all(&run.0)?;
        let command = run.0.join("cmd.sh");
        fs::write(&command, command_script(cwd, script))?;
        let socket = run.0.join("vfs.sock");
        // Ended when this returns, however it returns.
        let _virtiofsd = Daemon(start_virtiofsd(&socket, &run.0)?);
        let tty = u8::from(std::io::stdout().is_terminal());
        let mut qemu = Command::new("qemu-system-x86_64");
        qemu.args(["-accel", "tcg,thread=multi", "-cpu", "max"])
            .args(["-smp", CPUS, "-m", MEMORY])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-no-reboot", "-device", "virtio-rng-pci"])
            .args(["-chardev", "stdio,id=con", "-serial", "chardev:con"])
            .arg("-kernel")
            .arg(&self.vmlinuz)
            .arg("-initrd")
            .arg(&self.initramfs)
            // vhost-user-fs needs the guest's memory shared with virtiofsd.
            .arg("-object")
            .arg(format!(
                "memory-backend-memfd,id=mem,size={MEMORY},share=on"
            ))
            .args(["-numa", "node,memdev=mem", "-chardev"])
            .arg(format!("socket,id=vfs,path={}", socket.display()))
            .args(["-device", "vhost-user-fs-pci,chardev=vfs,tag=hostroot"])
            .arg("-append")
            .arg(format!(
                "console=ttyS0 {} panic=-1 rdinit=/init mitigations=off {} \
                 xtvm.run={} xtvm.nonce={nonce} xtvm.tty={tty}",
                if verbose() { "" } else { "quiet loglevel=3" },
                host_hugepages(),
                command.display()
            ));
        println!(
            "xtask: booting Linux {} under QEMU (TCG, {CPUS} CPUs, {MEMORY})",
            self.release
        );
        stream(qemu, &nonce, timeout)
    }
}

/// The host's transparent huge page mode, for the guest: Debian's kernels
/// default to `always`, which makes untouched pages next to touched ones
/// resident; the guest should differ from the host by its kernel only.
fn host_hugepages() -> String {
    let modes = fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled");
    let mode = modes
        .as_deref()
        .unwrap_or_default()
        .split_whitespace()
        .find_map(|m| m.strip_prefix('[')?.strip_suffix(']'));
    mode.map(|m| format!("transparent_hugepage={m}"))
        .unwrap_or_default()
}

/// XTASK_VM_VERBOSE=1 shows the kernel's boot messages.
fn verbose() -> bool {
    std::env::var_os("XTASK_VM_VERBOSE").is_some_and(|v| v == "1")
}

/// The script the guest runs: into `cwd`, the host's environment (some of
/// it), then `script`. Quoted for sh, so nothing goes through the kernel's
/// command line but the script's path.
fn command_script(cwd: &Path, script: &str) -> String {
    let mut text = format!("cd {} || exit 125\n", quote(cwd.as_os_str().as_bytes()));
    for name in PASS_ENV {
        if let Some(value) = std::env::var_os(name) {
            text.push_str(&format!("export {name}={}\n", quote(value.as_bytes())));
        }
    }
    text.push_str(script);
    text
}

/// Single-quoted for sh.
pub fn quote(bytes: &[u8]) -> String {
    format!(
        "'{}'",
        String::from_utf8_lossy(bytes).replace('\'', r"'\''")
    )
}

fn nonce() -> anyhow::Result<String> {
    let mut bytes = [0u8; 8];
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A run's folder, removed when the run ends.
struct RunDir(PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_dir_all(&self.0) {
            eprintln!("xtask: cannot remove {}: {error}", self.0.display());
        }
    }
}

/// Removes the folders of runs whose xtask died (killed: no Drop ran).
fn sweep_runs(runs: &Path) {
    for entry in fs::read_dir(runs).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let owner = name.split('-').nth(1).unwrap_or_default();
        if !Path::new("/proc").join(owner).exists() {
            fs::remove_dir_all(entry.path()).ok();
        }
    }
}

/// virtiofsd, killed when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // It may have ended with QEMU: nothing to kill then.
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn start_virtiofsd(socket: &Path, run: &Path) -> anyhow::Result<Child> {
    if !Path::new(VIRTIOFSD).exists() {
        bail!("{VIRTIOFSD} is missing (bookworm's qemu-system-common ships it)");
    }
    let log = fs::File::create(run.join("virtiofsd.log"))?;
    // sandbox=chroot also works in containers, which may refuse the
    // namespaces of the default sandbox. This virtiofsd has no read-only
    // mode: the guest mounts the share read-only.
    let mut child = Command::new(VIRTIOFSD)
        .arg(format!("--socket-path={}", socket.display()))
        .args([
            "-o",
            "source=/",
            "-o",
            "cache=always",
            "-o",
            "sandbox=chroot",
        ])
        .args(["-o", "log_level=err"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("cannot start virtiofsd")?;
    let started = Instant::now();
    while !socket.exists() {
        if started.elapsed() > Duration::from_secs(10) || child.try_wait()?.is_some() {
            child.kill().ok();
            child.wait().ok();
            let log = fs::read_to_string(run.join("virtiofsd.log")).unwrap_or_default();
            bail!("virtiofsd did not start: {}", log.trim());
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

/// Runs QEMU, copies the console to stdout (but the marker), and returns
/// the status the marker carries.
fn stream(mut qemu: Command, nonce: &str, timeout: Duration) -> anyhow::Result<i32> {
    let mut child = qemu
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {}", describe(&qemu)))?;
    let console = child.stdout.take().context("QEMU's console")?;
    // The status, and when the marker came.
    let marked: Arc<Mutex<Option<(i32, Instant)>>> = Arc::default();
    let copier = {
        let (marked, marker) = (marked.clone(), format!("@@VM-EXIT:{nonce}:"));
        thread::spawn(move || copy_console(console, &marker, &marked))
    };
    let started = Instant::now();
    let ended = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        let late = match *marked.lock().expect("marker lock") {
            Some((_, at)) => at.elapsed() > POWER_OFF,
            None => started.elapsed() > timeout,
        };
        if late {
            child.kill().ok();
            child.wait()?;
            break None;
        }
        thread::sleep(Duration::from_millis(100));
    };
    match copier.join() {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(error).context("copying the guest's console"),
        Err(_) => bail!("copying the guest's console panicked"),
    }
    let marked = *marked.lock().expect("marker lock");
    match (marked, ended) {
        (Some((status, _)), _) => Ok(status),
        (None, None) => bail!(
            "the VM was still running after {} s, and was killed",
            timeout.as_secs()
        ),
        (None, Some(status)) => bail!("the VM stopped ({status}) before its command finished"),
    }
}

fn copy_console(
    console: ChildStdout,
    marker: &str,
    marked: &Mutex<Option<(i32, Instant)>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(console);
    let mut line = Vec::new();
    let mut out = std::io::stdout();
    let mut finished = false;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        if finished {
            continue; // the kernel powering off
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        let (shown, status) = match text.find(marker) {
            Some(at) => {
                let status = text[at + marker.len()..].split("@@").next();
                (&text[..at], status.and_then(|s| s.parse::<i32>().ok()))
            }
            None => (text, None),
        };
        if !shown.is_empty() || status.is_none() {
            writeln!(out, "{shown}")?;
            out.flush()?;
        }
        if let Some(status) = status {
            *marked.lock().expect("marker lock") = Some((status, Instant::now()));
            finished = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_for_sh() {
        assert_eq!(quote(b"/a b/c"), "'/a b/c'");
        assert_eq!(quote(b"it's"), r"'it'\''s'");
    }

    #[test]
    fn guest_versions() {
        let guest = |release: &str| Guest {
            release: release.into(),
            vmlinuz: PathBuf::new(),
            initramfs: PathBuf::new(),
            runs: PathBuf::new(),
        };
        assert_eq!(guest("6.1.0-56-cloud-amd64").version(), Some((6, 1)));
        assert_eq!(guest("5.10.0-46-cloud-amd64").version(), Some((5, 10)));
        assert_eq!(guest("6.12.117+deb12-cloud-amd64").version(), Some((6, 12)));
        assert_eq!(guest("x").version(), None);
    }
}
