//! A real registry for the OCI tests: Debian's `docker-registry` (Docker
//! distribution) on a loopback port, storage in a temp dir; test images
//! built with `umoci` and pushed with `skopeo`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::run;

pub struct DockerRegistry {
    child: Child,
    pub port: u16,
}

impl DockerRegistry {
    /// Start it, or `None` when the tools are missing, after
    /// [`super::skip`] (SKIP locally, a panic under `CI=true`).
    pub fn start(dir: &Path) -> Option<Self> {
        if !["docker-registry", "umoci", "skopeo"]
            .iter()
            .all(|t| super::have(t))
        {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = dir.join("registry-store");
        std::fs::create_dir_all(&store).unwrap();
        let conf = dir.join("registry.yml");
        std::fs::write(
            &conf,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                store.display()
            ),
        )
        .unwrap();
        // Waited for in `Drop`.
        #[allow(clippy::zombie_processes)]
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut reg = Self { child, port };
        // Until its port answers; the deadline only bounds a failure.
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = reg.child.try_wait() {
                panic!("docker-registry exited: {st}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "docker-registry did not start within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(reg)
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `skopeo copy` an OCI layout image to `repo:tag` here, with extra
    /// skopeo flags (compression).
    pub fn push(&self, layout: &Path, image_tag: &str, repo_tag: &str, flags: &[&str]) {
        let (code, out) = run(Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--dest-tls-verify=false"])
            .args(flags)
            .arg(format!("oci:{}:{image_tag}", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.host())));
        assert_eq!(code, 0, "skopeo copy: {out}");
    }
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An OCI layout at `dir/layout` holding image `tag` for `arch` with the
/// given files (path in the image → content), one layer per file.
pub fn umoci_image(dir: &Path, tag: &str, arch: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let layout = dir.join("layout");
    let lay = layout.display().to_string();
    if !layout.exists() {
        let (code, out) = run(Command::new("umoci").args(["init", "--layout", &lay]));
        assert_eq!(code, 0, "umoci init: {out}");
    }
    let image = format!("{lay}:{tag}");
    let (code, out) = run(Command::new("umoci").args(["new", "--image", &image]));
    assert_eq!(code, 0, "umoci new: {out}");
    let (code, out) = run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--os",
        "linux",
        "--architecture",
        arch,
    ]));
    assert_eq!(code, 0, "umoci config: {out}");
    for (i, (path, content)) in files.iter().enumerate() {
        let src = dir.join(format!("src-{tag}-{i}"));
        std::fs::write(&src, content).unwrap();
        let (code, out) = run(Command::new("umoci")
            .args(["insert", "--rootless", "--image", &image])
            .arg(&src)
            .arg(path));
        assert_eq!(code, 0, "umoci insert: {out}");
    }
    layout
}

/// Add a layer removing `path` (an OCI whiteout) to `layout:tag`.
pub fn umoci_whiteout(layout: &Path, tag: &str, path: &str) {
    let (code, out) = run(Command::new("umoci")
        .args(["insert", "--rootless", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .args(["--whiteout", path]));
    assert_eq!(code, 0, "umoci insert --whiteout: {out}");
}
