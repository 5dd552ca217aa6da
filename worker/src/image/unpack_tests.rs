use super::*;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

/// One tar entry, written with raw name fields so that hostile paths (which `tar::Builder` refuses) can be made.
struct E<'a>(tar::EntryType, &'a str, &'a str, &'a [u8], u32);

fn file<'a>(name: &'a str, data: &'a [u8]) -> E<'a> {
    E(tar::EntryType::Regular, name, "", data, 0o644)
}
fn dir(name: &str, mode: u32) -> E<'_> {
    E(tar::EntryType::Directory, name, "", b"", mode)
}
fn symlink<'a>(name: &'a str, target: &'a str) -> E<'a> {
    E(tar::EntryType::Symlink, name, target, b"", 0o777)
}
fn hardlink<'a>(name: &'a str, target: &'a str) -> E<'a> {
    E(tar::EntryType::Link, name, target, b"", 0o644)
}

fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for E(kind, name, link, data, mode) in entries {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_entry_type(*kind);
        header.set_mode(*mode);
        header.set_size(data.len() as u64);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        if matches!(kind, tar::EntryType::Block | tar::EntryType::Char) {
            header.set_device_major(8).unwrap();
            header.set_device_minor(0).unwrap();
        }
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A scratch tree: `layer/` to unpack into, and `outside/` with a file that must never change.
struct Scratch {
    _dir: tempfile::TempDir,
    layer: PathBuf,
    outside: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("a/b/layer");
        let outside = dir.path().join("outside");
        fs::create_dir_all(&layer).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("file"), "original").unwrap();
        Scratch {
            _dir: dir,
            layer,
            outside,
        }
    }

    fn unpack(&self, entries: &[E]) -> Result<Unpacked, UnpackError> {
        unpack(&tar_of(entries)[..], &self.layer, u64::MAX)
    }

    fn assert_outside_unchanged(&self) {
        let names: Vec<_> = fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["file"], "something was written outside the layer");
        assert_eq!(
            fs::read_to_string(self.outside.join("file")).unwrap(),
            "original"
        );
        let mode = fs::metadata(&self.outside).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o755, "the outside dir's mode changed");
        let parent = self.layer.parent().unwrap();
        assert_eq!(
            fs::read_dir(parent).unwrap().count(),
            1,
            "written beside the layer"
        );
    }
}

fn refused_reason(result: Result<Unpacked, UnpackError>) -> String {
    match result {
        Err(UnpackError::Refused { reason, .. }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_gzip_layer_unpacks_with_both_digests() {
    let s = Scratch::new();
    let tar = tar_of(&[
        dir("./", 0o755),
        dir("bin/", 0o755),
        file("bin/tool", b"#!/bin/sh\n"),
        symlink("bin/alias", "tool"),
        hardlink("bin/copy", "bin/tool"),
        dir("ro/", 0o555),
        file("ro/inside", b"x"),
    ]);
    let blob = gzip(&tar);
    let unpacked = unpack(&blob[..], &s.layer, u64::MAX).unwrap();
    assert_eq!(unpacked.blob_digest, sha(&blob));
    assert_eq!(unpacked.diff_id, sha(&tar));
    assert_eq!(
        fs::read_to_string(s.layer.join("bin/copy")).unwrap(),
        "#!/bin/sh\n"
    );
    assert_eq!(
        fs::read_link(s.layer.join("bin/alias")).unwrap(),
        Path::new("tool")
    );
    assert_eq!(
        fs::metadata(s.layer.join("ro")).unwrap().mode() & 0o777,
        0o555
    );
    assert!(s.layer.join("ro/inside").exists());
    // A plain tar is fine too, with equal digests.
    let plain = Scratch::new();
    let unpacked = unpack(&tar[..], &plain.layer, u64::MAX).unwrap();
    assert_eq!(unpacked.blob_digest, unpacked.diff_id);
}

#[test]
fn parent_dir_components_refuse_the_layer() {
    let s = Scratch::new();
    let reason = refused_reason(s.unpack(&[file("../../outside/file", b"pwned")]));
    assert!(reason.contains(".."), "{reason}");
    let reason = refused_reason(s.unpack(&[file("x/../../../outside/new", b"pwned")]));
    assert!(reason.contains(".."), "{reason}");
    s.assert_outside_unchanged();
}

#[test]
fn absolute_paths_land_inside_the_layer() {
    let s = Scratch::new();
    let abs = s.outside.join("file");
    s.unpack(&[file(abs.to_str().unwrap(), b"inside")]).unwrap();
    let landed = s.layer.join(abs.strip_prefix("/").unwrap());
    assert_eq!(fs::read_to_string(landed).unwrap(), "inside");
    s.assert_outside_unchanged();
}

#[test]
fn nothing_is_written_through_a_symlink() {
    let s = Scratch::new();
    let outside = s.outside.to_str().unwrap();
    // A later entry under a symlinked directory.
    let reason =
        refused_reason(s.unpack(&[symlink("escape", outside), file("escape/file", b"pwned")]));
    assert!(reason.contains("symlink"), "{reason}");
    let reason = refused_reason(s.unpack(&[symlink("up", "../../.."), file("up/x", b"pwned")]));
    assert!(reason.contains("symlink"), "{reason}");
    // A file entry named like an existing symlink replaces the link instead of writing to its target.
    let s2 = Scratch::new();
    let target = format!("{outside}/file");
    s2.unpack(&[symlink("link", &target), file("link", b"replaced")])
        .unwrap();
    assert_eq!(
        fs::read_to_string(s2.layer.join("link")).unwrap(),
        "replaced"
    );
    // A directory replaced by a symlink keeps its deferred chmod away from the symlink's target.
    let s3 = Scratch::new();
    s3.unpack(&[dir("d/", 0o700), symlink("d", outside)])
        .unwrap();
    for scratch in [&s, &s2, &s3] {
        scratch.assert_outside_unchanged();
    }
}

#[test]
fn hardlinks_must_stay_inside_the_layer() {
    let s = Scratch::new();
    let outside_file = format!("{}/file", s.outside.display());
    for entries in [
        vec![hardlink("hl", "../../../outside/file")],
        vec![hardlink("hl", &outside_file)],
        vec![
            symlink("d", s.outside.to_str().unwrap()),
            hardlink("hl", "d/file"),
        ],
    ] {
        refused_reason(s.unpack(&entries));
    }
    s.assert_outside_unchanged();
}

#[test]
fn set_id_bits_are_stripped_from_files_only() {
    let s = Scratch::new();
    let entry = |kind, name, mode| E(kind, name, "", b"", mode);
    s.unpack(&[
        entry(tar::EntryType::Regular, "su", 0o4755),
        entry(tar::EntryType::Regular, "wall", 0o2755),
        entry(tar::EntryType::Directory, "shared/", 0o2775),
        entry(tar::EntryType::Directory, "tmp/", 0o1777),
    ])
    .unwrap();
    let mode = |name: &str| fs::metadata(s.layer.join(name)).unwrap().mode() & 0o7777;
    assert_eq!(mode("su"), 0o755);
    assert_eq!(mode("wall"), 0o755);
    assert_eq!(mode("shared"), 0o2775);
    assert_eq!(mode("tmp"), 0o1777);
}

#[test]
fn device_nodes_are_skipped() {
    let s = Scratch::new();
    let device = |kind, name| E(kind, name, "", b"", 0o666);
    s.unpack(&[
        device(tar::EntryType::Block, "dev/sda"),
        device(tar::EntryType::Char, "dev/mem"),
        file("dev/ok", b""),
    ])
    .unwrap();
    assert!(fs::symlink_metadata(s.layer.join("dev/sda")).is_err());
    assert!(fs::symlink_metadata(s.layer.join("dev/mem")).is_err());
    assert!(s.layer.join("dev/ok").exists());
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: whiteouts need CAP_MKNOD and CAP_SYS_ADMIN (run as root)");
        return;
    }
    let s = Scratch::new();
    s.unpack(&[
        file("etc/.wh.gone", b""),
        dir("opaque/", 0o755),
        file("opaque/.wh..wh..opq", b""),
        file("opaque/kept", b"k"),
    ])
    .unwrap();
    let meta = fs::symlink_metadata(s.layer.join("etc/gone")).unwrap();
    assert!(meta.file_type().is_char_device());
    assert_eq!(meta.rdev(), 0);
    assert!(fs::symlink_metadata(s.layer.join("etc/.wh.gone")).is_err());
    for name in ["trusted.overlay.opaque", "user.overlay.opaque"] {
        let opaque = xattr::get(s.layer.join("opaque"), name).unwrap();
        assert_eq!(opaque.as_deref(), Some(&b"y"[..]), "{name}");
    }
    assert!(s.layer.join("opaque/kept").exists());
    assert!(fs::symlink_metadata(s.layer.join("opaque/.wh..wh..opq")).is_err());
}

#[test]
fn zstd_and_garbage_are_refused_with_a_message() {
    let s = Scratch::new();
    let err = unpack(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0][..], &s.layer, u64::MAX).unwrap_err();
    assert!(err.to_string().contains("zstd"), "{err}");
    let err = unpack(
        &gzip(b"not a tar at all, just some bytes")[..],
        &s.layer,
        u64::MAX,
    );
    assert!(err.is_err());
}

#[test]
fn a_gzip_bomb_stops_at_the_layer_limit() {
    // 64 MiB of zeros in one file: about 64 KiB once gzipped.
    let zeros = vec![0u8; 64 << 20];
    let bomb = gzip(&tar_of(&[file("zeros", &zeros)]));
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    let s = Scratch::new();
    let limit = 4 << 20;
    match unpack(&bomb[..], &s.layer, limit) {
        Err(e @ UnpackError::TooLarge { .. }) => {
            assert!(e.to_string().contains("max_layer_bytes"), "{e}")
        }
        other => panic!("expected the limit, got {other:?}"),
    }
    // Unpacking stopped at the limit: what was written is about the limit, not the file.
    let written = fs::metadata(s.layer.join("zeros")).map_or(0, |m| m.len());
    assert!(written <= limit, "{written} bytes written");
    // Under the limit, the same layer unpacks.
    let roomy = Scratch::new();
    unpack(&bomb[..], &roomy.layer, 65 << 20).unwrap();
}
