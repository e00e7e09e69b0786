//! The demo's own mounts: a fresh image per scenario and model, in a private
//! directory of /dev/shm (mkdtemp, 0700), mounted on another private directory,
//! served by a foreground daemon that the demo can also kill (a crash).

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::pages::PageModel;

/// A daxlink mount owned by the demo: a fresh image, a foreground daemon.
pub(super) struct DemoMount {
    pub(super) image: PathBuf,
    /// The private directory (mkdtemp, 0700) on /dev/shm holding the image.
    shm: PathBuf,
    pub(super) dir: PathBuf,
    pub(super) opts: String,
    child: Option<Child>,
}

fn is_mounted(dir: &Path) -> bool {
    let d = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(d.as_str()))
}

impl DemoMount {
    pub(super) fn new(tag: &str, model: PageModel) -> io::Result<DemoMount> {
        // Unpredictable names, made by mkdtemp (mode 0700): another user can
        // neither guess them in advance nor plant a file or link there.
        let base = nix::unistd::mkdtemp(&std::env::temp_dir().join("daxlink-demo-XXXXXX"))
            .map_err(io::Error::from)?;
        let shm = match nix::unistd::mkdtemp(Path::new("/dev/shm/daxlink-demo-XXXXXX")) {
            Ok(d) => d,
            Err(e) => {
                let _ = fs::remove_dir(&base);
                return Err(e.into());
            }
        };
        let image = shm.join(format!("{tag}.img"));
        let mut m = DemoMount {
            image,
            shm,
            dir: base,
            opts: format!("page_model={},layout_timeout_ms=300", model.name()),
            child: None,
        };
        // The image is the demo's alone: created here, 0600.
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&m.image)?;
        crate::tools::mkfs::mkfs_path(&m.image, Some(64 << 20), true, &Default::default())
            .map_err(io::Error::other)?;
        m.start()?;
        Ok(m)
    }

    fn start(&mut self) -> io::Result<()> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg("mount")
            .arg(&self.image)
            .arg(&self.dir)
            .args(["-f", "-o", &self.opts])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let t0 = Instant::now();
        while !is_mounted(&self.dir) {
            if child.try_wait()?.is_some() || t0.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                return Err(io::Error::other("the daxlink daemon did not mount"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.child = Some(child);
        Ok(())
    }

    pub(super) fn p(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if is_mounted(&self.dir) {
                let ok = Command::new("umount")
                    .arg(&self.dir)
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
                }
            }
            let t0 = Instant::now();
            while c.try_wait().ok().flatten().is_none() && t0.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The daemon dies with pins held (a crash); then the image is mounted again.
    pub(super) fn crash_and_remount(&mut self) -> io::Result<()> {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let t0 = Instant::now();
        while is_mounted(&self.dir) && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.start()
    }
}

impl Drop for DemoMount {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_file(&self.image);
        let _ = fs::remove_dir(&self.shm);
        let _ = fs::remove_dir(&self.dir);
    }
}
