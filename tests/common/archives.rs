//! Archives for the expansion tests: a source tree packed by the real tools
//! (tar, gzip, bzip2, xz, zip), hostile archives crafted with Python's
//! tarfile/zipfile, and a comparison of an expanded tree with its source.
#![allow(dead_code, clippy::unwrap_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::run;

/// Write the source tree under `dir/src`: nested and deep directories,
/// non-ASCII names, modes (0600, 0755, setgid dir, sticky dir), symlinks
/// (relative, to a directory, dangling-inside), a hard link, an empty file,
/// a 3 MiB file, junk (`.DS_Store`, `__MACOSX/`, `._x`, `Thumbs.db`), and
/// fixed mtimes. Returns its path.
pub fn make_tree(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    let script = r#"
import os, random, sys
root = sys.argv[1]
def w(p, data, mode=0o644):
    p = os.path.join(root, p); os.makedirs(os.path.dirname(p), exist_ok=True)
    open(p, 'wb').write(data); os.chmod(p, mode)
w('index.html', b'<html>hello</html>\n')
w('empty', b'')
w('bin/run.sh', b'#!/bin/sh\necho hi\n', 0o755)
w('secret/key', b'k' * 100, 0o600)
w('big/blob.bin', random.Random(7).randbytes(3 * 1024 * 1024 + 17))
deep = '/'.join('d%02d' % i for i in range(30))
w(deep + '/leaf.txt', b'deep\n')
w('d\u00e9j\u00e0 vu/\u65e5\u672c\u8a9e.txt', 'na\u00efve\n'.encode())
w('sp ace/\u00fcml\u00e4ut \u2603.txt', b'snow\n')
w('.DS_Store', b'junk'); w('__MACOSX/._index.html', b'junk'); w('bin/._run.sh', b'junk')
w('Thumbs.db', b'junk'); w('sp ace/desktop.ini', b'junk')
os.symlink('index.html', os.path.join(root, 'link-to-index'))
os.symlink('../index.html', os.path.join(root, 'bin/up-link'))
os.symlink('d\u00e9j\u00e0 vu', os.path.join(root, 'dirlink'))
os.symlink('missing-but-inside', os.path.join(root, 'dangling'))
os.link(os.path.join(root, 'index.html'), os.path.join(root, 'bin/hard'))
os.makedirs(os.path.join(root, 'shared'), exist_ok=True)
os.chmod(os.path.join(root, 'shared'), 0o2775)
os.makedirs(os.path.join(root, 'tmp'), exist_ok=True)
os.chmod(os.path.join(root, 'tmp'), 0o1777)
for dp, dns, fns in os.walk(root, topdown=False):
    for n in dns + fns:
        os.utime(os.path.join(dp, n), (1600000000, 1600000000 + len(n)), follow_symlinks=False)
"#;
    let (code, out) = run(Command::new("python3").arg("-c").arg(script).arg(&src));
    assert_eq!(code, 0, "make_tree: {out}");
    src
}

/// Pack `src` into `out` with the real tools; `kind` is a `via` value.
pub fn pack(kind: &str, src: &Path, out: &Path) {
    let o = out.to_str().unwrap();
    let s = src.to_str().unwrap();
    let sh = match kind {
        "tar" => format!("tar -C '{s}' -cf '{o}' ."),
        "gztar" => format!("tar -C '{s}' -cf - . | gzip -c > '{o}'"),
        "bztar" => format!("tar -C '{s}' -cf - . | bzip2 -c > '{o}'"),
        "xztar" => format!("tar -C '{s}' -cf - . | xz -T1 -c > '{o}'"),
        // -y: store symlinks as links; TZ=UTC: zip's DOS times are local.
        "zip" => format!("cd '{s}' && TZ=UTC zip -q -r -y '{o}' ."),
        k => panic!("unknown kind {k}"),
    };
    let (code, log) = run(Command::new("sh").arg("-c").arg(sh));
    assert_eq!(code, 0, "pack {kind}: {log}");
}

fn is_junk(rel: &Path) -> bool {
    rel.components().any(|c| {
        let n = c.as_os_str().to_string_lossy();
        n == "__MACOSX"
            || n == ".DS_Store"
            || n.starts_with("._")
            || n == "Thumbs.db"
            || n == "desktop.ini"
    })
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        out.push(e.path().strip_prefix(root).unwrap().to_path_buf());
        if e.file_type().unwrap().is_dir() {
            walk(root, &e.path(), out);
        }
    }
}

/// The expanded tree `got` equals `src` minus junk: same paths, kinds,
/// contents, symlink targets, permission bits and mtimes (dirs and files;
/// `zip` has no setgid/sticky in every zip tool, so `perm_mask` narrows).
pub fn assert_same_tree(src: &Path, got: &Path, perm_mask: u32, what: &str) {
    let mut a = Vec::new();
    walk(src, src, &mut a);
    a.retain(|p| !is_junk(p));
    a.sort();
    let mut b = Vec::new();
    walk(got, got, &mut b);
    b.sort();
    assert_eq!(a, b, "{what}: set of paths");
    for rel in &a {
        let (x, y) = (src.join(rel), got.join(rel));
        let (mx, my) = (
            std::fs::symlink_metadata(&x).unwrap(),
            std::fs::symlink_metadata(&y).unwrap(),
        );
        let r = rel.display();
        assert_eq!(mx.file_type(), my.file_type(), "{what}: {r}: type");
        if mx.file_type().is_symlink() {
            assert_eq!(
                std::fs::read_link(&x).unwrap(),
                std::fs::read_link(&y).unwrap(),
                "{what}: {r}: target"
            );
            continue;
        }
        if mx.is_file() {
            assert!(
                std::fs::read(&x).unwrap() == std::fs::read(&y).unwrap(),
                "{what}: {r}: content"
            );
        }
        assert_eq!(
            mx.permissions().mode() & perm_mask,
            my.permissions().mode() & perm_mask,
            "{what}: {r}: permissions"
        );
        if mx.is_file() {
            assert_eq!(mx.mtime(), my.mtime(), "{what}: {r}: mtime");
        }
    }
}

/// Run a Python script with `args` (hostile archive crafting).
pub fn python(script: &str, args: &[&str]) {
    let (code, out) = run(Command::new("python3").arg("-c").arg(script).args(args));
    assert_eq!(code, 0, "python: {out}");
}

/// A tar.gz whose members are given as `kind:name[:arg]` strings:
/// `file:NAME:SIZE` (zeros), `dir:NAME`, `sym:NAME:TARGET`,
/// `hard:NAME:TARGET`, `fifo:NAME`, `chr:NAME`.
pub fn crafted_tgz(out: &Path, members: &[&str]) {
    let script = r#"
import io, sys, tarfile
out = sys.argv[1]
with tarfile.open(out, 'w:gz', format=tarfile.GNU_FORMAT) as t:
    for spec in sys.argv[2:]:
        kind, name, *rest = spec.split(':', 2)
        ti = tarfile.TarInfo(name); ti.mtime = 1600000000
        if kind == 'file':
            ti.size = int(rest[0]); t.addfile(ti, io.BytesIO(b'\0' * ti.size))
        elif kind == 'dir':
            ti.type = tarfile.DIRTYPE; ti.mode = 0o755; t.addfile(ti)
        elif kind == 'sym':
            ti.type = tarfile.SYMTYPE; ti.linkname = rest[0]; t.addfile(ti)
        elif kind == 'hard':
            ti.type = tarfile.LNKTYPE; ti.linkname = rest[0]; t.addfile(ti)
        elif kind == 'fifo':
            ti.type = tarfile.FIFOTYPE; t.addfile(ti)
        elif kind == 'chr':
            ti.type = tarfile.CHRTYPE; ti.devmajor = 1; ti.devminor = 3; t.addfile(ti)
"#;
    let mut args = vec![out.to_str().unwrap()];
    args.extend_from_slice(members);
    python(script, &args);
}

/// tar.gz bomb: one member `zeros` of `gib` GiB of zeros (compresses ~1000:1).
pub fn tgz_bomb(out: &Path, gib: u64) {
    let script = r#"
import sys, tarfile, zlib
out, size = sys.argv[1], int(sys.argv[2]) << 30
ti = tarfile.TarInfo('zeros'); ti.size = size; ti.mtime = 1600000000
hdr = ti.tobuf(format=tarfile.GNU_FORMAT)
c = zlib.compressobj(1, zlib.DEFLATED, 31)
chunk = b'\0' * (1 << 24)
with open(out, 'wb') as f:
    f.write(c.compress(hdr))
    for _ in range(size >> 24):
        f.write(c.compress(chunk))
    f.write(c.compress(b'\0' * 1024)); f.write(c.flush())
"#;
    python(script, &[out.to_str().unwrap(), &gib.to_string()]);
}

/// zip bomb: one deflated member `zeros` of `gib` GiB of zeros.
pub fn zip_bomb(out: &Path, gib: u64) {
    let script = r#"
import sys, zipfile
out, size = sys.argv[1], int(sys.argv[2]) << 30
with zipfile.ZipFile(out, 'w', zipfile.ZIP_DEFLATED, compresslevel=1) as z:
    with z.open('zeros', 'w', force_zip64=True) as f:
        chunk = b'\0' * (1 << 24)
        for _ in range(size >> 24):
            f.write(chunk)
"#;
    python(script, &[out.to_str().unwrap(), &gib.to_string()]);
}

/// A tar.gz of `n` empty files, made from one header template (fast:
/// only the name and checksum change).
pub fn many_entries_tgz(out: &Path, n: u64) {
    let script = r#"
import sys, tarfile, zlib
out, n = sys.argv[1], int(sys.argv[2])
ti = tarfile.TarInfo('f0000000'); ti.mtime = 1600000000
t = ti.tobuf(format=tarfile.USTAR_FORMAT)
base = sum(t[:148]) + 8 * 32 + sum(t[156:512]) - sum(b'f0000000')
c = zlib.compressobj(1, zlib.DEFLATED, 31)
with open(out, 'wb') as f:
    buf = []
    for i in range(n):
        name = b'f%07d' % i
        buf.append(name + t[8:148] + b'%06o\0 ' % (base + sum(name)) + t[156:512])
        if len(buf) == 8192:
            f.write(c.compress(b''.join(buf))); buf = []
    f.write(c.compress(b''.join(buf) + b'\0' * 1024)); f.write(c.flush())
"#;
    python(script, &[out.to_str().unwrap(), &n.to_string()]);
}
