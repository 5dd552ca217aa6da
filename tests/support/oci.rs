//! OCI images made by the tests, offline: a busybox image with Debian's `umoci` (as an operator would), and
//! layouts written directly (layers made with the `tar` crate), for layers no tool would produce: hostile
//! paths, whiteouts.

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The statically linked busybox of Debian's `busybox-static`.
pub const BUSYBOX: &str = "/bin/busybox";

/// Runs a tool the tests need, panicking with the Debian package to install when it is missing or fails.
pub fn tool(program: &str, args: &[&str], package: &str) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): apt-get install {package}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed (package {package}): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// busybox's applet names, to link them all.
fn applets() -> Vec<String> {
    assert!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: apt-get install busybox-static"
    );
    tool(BUSYBOX, &["--list"], "busybox-static")
        .lines()
        .map(str::to_owned)
        .filter(|a| a != "busybox")
        .collect()
}

/// Builds `DIR/layout:busybox` with umoci from the host's busybox, with `Env`, `WorkingDir` and `User` set
/// as given; returns the layout's path.
pub fn umoci_busybox(dir: &Path, env: &[&str], workdir: &str) -> PathBuf {
    let layout = dir.join("layout");
    let bundle = dir.join("bundle");
    let image = format!("{}:busybox", layout.display());
    let umoci = |args: &[&str]| tool("umoci", args, "umoci");
    umoci(&["init", "--layout", layout.to_str().unwrap()]);
    umoci(&["new", "--image", &image]);
    umoci(&["unpack", "--image", &image, bundle.to_str().unwrap()]);
    let bin = bundle.join("rootfs/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(BUSYBOX, bin.join("busybox")).unwrap();
    for applet in applets() {
        let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
    }
    umoci(&["repack", "--image", &image, bundle.to_str().unwrap()]);
    let mut config = vec![
        "config",
        "--image",
        &image,
        "--config.cmd",
        "/bin/sh",
        "--architecture",
        "amd64",
        "--os",
        "linux",
        "--config.workingdir",
        workdir,
    ];
    for var in env {
        config.extend(["--config.env", var]);
    }
    umoci(&config);
    layout
}

/// Copies `oci:LAYOUT:TAG` to `REGISTRY/NAME` with skopeo (plain HTTP, as for any loopback registry).
pub fn skopeo_push(layout: &Path, tag: &str, destination: &str) {
    tool(
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            &format!("oci:{}:{tag}", layout.display()),
            &format!("docker://{destination}"),
        ],
        "skopeo",
    );
}

/// One tar entry. Names are written raw, so that `..` and absolute paths (which `tar::Builder` refuses) can be
/// made.
pub enum Entry<'a> {
    /// A regular file.
    File(&'a str, &'a [u8]),
    /// An executable file.
    Exec(&'a str, &'a [u8]),
    /// A directory.
    Dir(&'a str),
    /// A symlink and its target.
    Symlink(&'a str, &'a str),
    /// A hardlink and its target.
    Hardlink(&'a str, &'a str),
    /// A block device node (8, 0: a disk).
    Block(&'a str),
    /// A character device node (1, 1: /dev/mem).
    Char(&'a str),
}

/// A gzip-compressed tar of `entries`.
pub fn layer(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let (kind, name, link, data, mode, dev) = match entry {
            Entry::File(n, d) => (tar::EntryType::Regular, *n, "", *d, 0o644, None),
            Entry::Exec(n, d) => (tar::EntryType::Regular, *n, "", *d, 0o755, None),
            Entry::Dir(n) => (tar::EntryType::Directory, *n, "", &b""[..], 0o755, None),
            Entry::Symlink(n, t) => (tar::EntryType::Symlink, *n, *t, &b""[..], 0o777, None),
            Entry::Hardlink(n, t) => (tar::EntryType::Link, *n, *t, &b""[..], 0o644, None),
            Entry::Block(n) => (tar::EntryType::Block, *n, "", &b""[..], 0o660, Some((8, 0))),
            Entry::Char(n) => (tar::EntryType::Char, *n, "", &b""[..], 0o660, Some((1, 1))),
        };
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(data.len() as u64);
        header.set_mtime(1_700_000_000);
        if let Some((major, minor)) = dev {
            header.set_device_major(major).unwrap();
            header.set_device_minor(minor).unwrap();
        }
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    gzip(&builder.into_inner().unwrap())
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(data), &mut out).unwrap();
    out
}

/// A base layer: busybox with every applet linked in `/bin`, and an `/etc/passwd` with a `builder` user.
pub fn busybox_layer() -> Vec<u8> {
    let busybox = std::fs::read(BUSYBOX).expect("apt-get install busybox-static");
    let applets = applets();
    let mut entries = vec![
        Entry::Dir("bin/"),
        Entry::Exec("bin/busybox", &busybox),
        Entry::Dir("etc/"),
        Entry::File(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nbuilder:x:1000:1000::/home/builder:/bin/sh\n",
        ),
        Entry::File("etc/group", b"root:x:0:\nbuilder:x:1000:\n"),
    ];
    let links: Vec<String> = applets.iter().map(|a| format!("bin/{a}")).collect();
    entries.extend(links.iter().map(|l| Entry::Symlink(l, "busybox")));
    layer(&entries)
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// An OCI image layout written directly.
pub struct Layout {
    /// Its directory.
    pub dir: PathBuf,
    manifests: Vec<serde_json::Value>,
}

impl Layout {
    /// An empty layout at `dir`.
    pub fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let layout = Layout {
            dir: dir.to_owned(),
            manifests: Vec::new(),
        };
        layout.write_index();
        layout
    }

    fn blob(&self, data: &[u8]) -> serde_json::Value {
        let digest = sha256(data);
        std::fs::write(self.dir.join("blobs/sha256").join(&digest[7..]), data).unwrap();
        json!({ "digest": digest, "size": data.len() })
    }

    fn write_index(&self) {
        let index = json!({ "schemaVersion": 2, "manifests": self.manifests });
        std::fs::write(self.dir.join("index.json"), index.to_string()).unwrap();
    }

    /// Adds image `tag` made of gzip `layers` (lowest first) with this run config (`Env`, `WorkingDir`,
    /// `User`, …).
    pub fn add(&mut self, tag: &str, layers: &[Vec<u8>], run: serde_json::Value) {
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256(&gunzip(l))).collect();
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": run,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        });
        let mut config_desc = self.blob(config.to_string().as_bytes());
        config_desc["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
        let layer_descs: Vec<serde_json::Value> = layers
            .iter()
            .map(|l| {
                let mut d = self.blob(l);
                d["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip".into();
                d
            })
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_desc,
            "layers": layer_descs,
        });
        let mut desc = self.blob(manifest.to_string().as_bytes());
        desc["mediaType"] = "application/vnd.oci.image.manifest.v1+json".into();
        desc["annotations"] = json!({ "org.opencontainers.image.ref.name": tag });
        self.manifests.push(desc);
        self.write_index();
    }
}
