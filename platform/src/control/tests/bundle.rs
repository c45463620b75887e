//! Every hostile bundle of the acceptance list is refused before anything is written.

use std::io::Write as _;

use flate2::Compression;
use flate2::write::GzEncoder;

use super::*;

const JOB_TOML: &str = r#"name = "bundled"
[trigger.kafka]
brokers = "127.0.0.1:9092"
topic = "clicks"
[function]
command = ["python3", "transform.py"]
[output]
url = "memory://lake/clicks"
schema = { id = "utf8" }
"#;

/// A tar being built by hand, so headers can say what no well-behaved packer writes.
struct RawTar {
    bytes: Vec<u8>,
}

impl RawTar {
    fn new() -> Self {
        Self { bytes: Vec::new() }
    }

    /// Appends a header with `name` written verbatim (no path checks) and `data`.
    fn entry(mut self, name: &[u8], kind: tar::EntryType, size: u64, data: &[u8]) -> Self {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(0o644);
        header.set_cksum();
        self.bytes.extend_from_slice(header.as_bytes());
        self.bytes.extend_from_slice(data);
        let padding = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0, padding));
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Self {
        self.entry(
            name.as_bytes(),
            tar::EntryType::Regular,
            data.len() as u64,
            data,
        )
    }

    fn symlink(mut self, name: &str, target: &str) -> Self {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_path(name).unwrap();
        header.set_link_name(target).unwrap();
        header.set_size(0);
        header.set_cksum();
        self.bytes.extend_from_slice(header.as_bytes());
        self
    }

    fn finish(mut self) -> Vec<u8> {
        self.bytes.extend(std::iter::repeat_n(0, 1024));
        gzip(&self.bytes)
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn read(gzip: &[u8]) -> Result<Bundle, BundleError> {
    Bundle::read(gzip, BundleLimits::default())
}

fn refused(gzip: &[u8]) -> BundleError {
    let error = read(gzip)
        .and_then(|bundle| bundle.validate(Path::new("/nonexistent/bundle"), None))
        .expect_err("the bundle must be refused");
    assert!(error.is_user_error(), "{error}");
    error
}

#[test]
fn a_valid_folder_packs_reads_and_unpacks_once() {
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("job.toml"), JOB_TOML).unwrap();
    std::fs::create_dir(folder.path().join("lib")).unwrap();
    std::fs::write(folder.path().join("lib/helper.py"), "x = 1\n").unwrap();
    std::fs::write(folder.path().join("transform.py"), "print()\n").unwrap();
    std::fs::set_permissions(
        folder.path().join("transform.py"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let packed = pack_folder(folder.path()).unwrap();
    let bundle = read(&packed).unwrap();
    // Same files, same bundle: deploying an unchanged folder is recognised.
    assert_eq!(
        read(&pack_folder(folder.path()).unwrap()).unwrap().sha256,
        bundle.sha256
    );

    let data = tempfile::tempdir().unwrap();
    let store = BundleStore::new(data.path(), BundleLimits::default());
    let dir = store.version_dir(&bundle.sha256);
    let spec = bundle.validate(&dir, Some("bundled")).unwrap();
    assert_eq!(spec.name, "bundled");
    assert_eq!(store.store(&bundle).unwrap(), dir);
    assert_eq!(
        std::fs::read_to_string(dir.join("lib/helper.py")).unwrap(),
        "x = 1\n"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("transform.py"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o111, 0o111);
    assert!(
        data.path()
            .join("bundles")
            .join(format!("{}.tar.gz", bundle.sha256))
            .is_file()
    );
    // Storing again changes nothing; a lost folder is unpacked again from the bundle.
    assert_eq!(store.store(&bundle).unwrap(), dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(store.ensure_unpacked(&bundle.sha256).unwrap(), dir);
    assert!(dir.join("job.toml").is_file());
}

#[test]
fn a_symlink_to_etc_passwd_is_refused() {
    let gzip = RawTar::new()
        .file("job.toml", JOB_TOML.as_bytes())
        .symlink("passwd", "/etc/passwd")
        .finish();
    let error = refused(&gzip);
    assert!(matches!(error, BundleError::EntryType { .. }), "{error}");
    assert!(error.to_string().contains("symbolic link"), "{error}");
}

#[test]
fn a_parent_path_is_refused() {
    let gzip = RawTar::new()
        .file("job.toml", JOB_TOML.as_bytes())
        .file("../../x", b"escaped")
        .finish();
    let error = refused(&gzip);
    assert!(matches!(error, BundleError::EntryPath { .. }), "{error}");
    assert!(error.to_string().contains("../../x"), "{error}");
}

#[test]
fn an_absolute_path_is_refused() {
    let gzip = RawTar::new()
        .file("job.toml", JOB_TOML.as_bytes())
        .file("/tmp/sluice-escaped", b"escaped")
        .finish();
    let error = refused(&gzip);
    assert!(matches!(error, BundleError::EntryPath { .. }), "{error}");
}

#[test]
fn a_device_node_is_refused() {
    let gzip = RawTar::new()
        .file("job.toml", JOB_TOML.as_bytes())
        .entry(b"null", tar::EntryType::Char, 0, b"")
        .finish();
    let error = refused(&gzip);
    assert!(error.to_string().contains("character device"), "{error}");
}

#[test]
fn a_one_gib_sparse_file_is_refused_without_reading_it() {
    // A 1 GiB file of holes as a plain packer writes it: the header announces 1 GiB; the
    // refusal comes from the header, before the data (cut short here) is read.
    let gib = 1 << 30;
    let gzip = RawTar::new()
        .file("job.toml", JOB_TOML.as_bytes())
        .entry(
            b"sparse.bin",
            tar::EntryType::Regular,
            gib,
            &vec![0; 1 << 20],
        )
        .finish();
    let error = refused(&gzip);
    assert!(matches!(error, BundleError::TooLarge { .. }), "{error}");
    // Stored as a GNU sparse entry instead: refused by its kind.
    let gzip = RawTar::new()
        .file("job.toml", JOB_TOML.as_bytes())
        .entry(b"sparse.bin", tar::EntryType::GNUSparse, 0, b"")
        .finish();
    let error = refused(&gzip);
    assert!(error.to_string().contains("sparse"), "{error}");
}

#[test]
fn a_hundred_thousand_empty_files_are_refused() {
    let mut tar = RawTar::new().file("job.toml", JOB_TOML.as_bytes());
    for i in 0..100_000 {
        tar = tar.file(&format!("f{i}"), b"");
    }
    let error = refused(&tar.finish());
    assert!(
        matches!(error, BundleError::TooManyEntries { limit: 10_000 }),
        "{error}"
    );
}

#[test]
fn a_gzip_bomb_is_stopped_at_the_limit() {
    // 256 MiB of zeros after a valid archive, about 256 KiB compressed.
    let mut tar = RawTar::new().file("job.toml", JOB_TOML.as_bytes()).bytes;
    tar.extend(std::iter::repeat_n(0, 1024));
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(&tar).unwrap();
    let zeros = vec![0; 1 << 20];
    for _ in 0..256 {
        encoder.write_all(&zeros).unwrap();
    }
    let gzip = encoder.finish().unwrap();
    assert!(gzip.len() < 2 << 20, "{}", gzip.len());
    let error = refused(&gzip);
    assert!(matches!(error, BundleError::TooLarge { .. }), "{error}");
    // The same with a tiny limit and a file that claims to be small but is in a stream
    // that is not: counting bytes, not trusting headers.
    let limits = BundleLimits {
        max_unpacked_bytes: 1024,
        max_entries: 10,
    };
    let error = Bundle::read(&gzip, limits).unwrap_err();
    assert!(
        matches!(error, BundleError::TooLarge { limit: 1024 }),
        "{error}"
    );
}

#[test]
fn an_invalid_job_file_is_refused_with_every_message_validate_prints() {
    let text = JOB_TOML.replace("schema = { id = \"utf8\" }", "schema = { id = \"nope\" }");
    let gzip = RawTar::new().file("job.toml", text.as_bytes()).finish();
    let error = refused(&gzip);
    let BundleError::InvalidSpec(errors) = &error else {
        panic!("{error}");
    };
    let dir = Path::new("/nonexistent/bundle");
    let expected = parse_job(&text, Path::new(JOB_FILE), dir, &|_| None).unwrap_err();
    assert_eq!(errors, &expected);
    assert_eq!(
        error.details(),
        expected.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    assert!(
        error.details()[0].contains("output.schema.id"),
        "{:?}",
        error.details()
    );
}

#[test]
fn a_bad_job_name_is_refused() {
    let text = JOB_TOML.replace("name = \"bundled\"", "name = \"../etc\"");
    let gzip = RawTar::new().file("job.toml", text.as_bytes()).finish();
    let error = refused(&gzip);
    assert!(
        error.details()[0].contains("invalid job name"),
        "{:?}",
        error.details()
    );
    // A valid name that is not the one the upload was for.
    let gzip = RawTar::new().file("job.toml", JOB_TOML.as_bytes()).finish();
    let error = read(&gzip)
        .unwrap()
        .validate(Path::new("/x"), Some("other"))
        .unwrap_err();
    assert!(matches!(error, BundleError::NameMismatch { .. }), "{error}");
}

#[test]
fn no_job_file_and_garbage_are_refused() {
    let gzip = RawTar::new().file("transform.py", b"print()").finish();
    assert!(matches!(refused(&gzip), BundleError::NoJobFile));
    assert!(matches!(
        refused(b"definitely not gzip"),
        BundleError::Unreadable(_)
    ));
}

#[test]
fn links_are_packed_as_what_they_point_to_and_a_loop_is_refused() {
    let shared = tempfile::tempdir().unwrap();
    std::fs::create_dir(shared.path().join("pkg")).unwrap();
    std::fs::write(shared.path().join("pkg/mod.py"), "y = 2\n").unwrap();
    std::fs::write(shared.path().join("common.py"), "z = 3\n").unwrap();
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("job.toml"), JOB_TOML).unwrap();
    std::os::unix::fs::symlink(shared.path().join("pkg"), folder.path().join("pkg")).unwrap();
    std::os::unix::fs::symlink(
        shared.path().join("common.py"),
        folder.path().join("common.py"),
    )
    .unwrap();

    let bundle = read(&pack_folder(folder.path()).unwrap()).unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = BundleStore::new(data.path(), BundleLimits::default());
    let dir = store.version_dir(&bundle.sha256);
    bundle.validate(&dir, Some("bundled")).unwrap();
    store.store(&bundle).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("pkg/mod.py")).unwrap(),
        "y = 2\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("common.py")).unwrap(),
        "z = 3\n"
    );
    assert!(!dir.join("pkg").is_symlink(), "content, not a link");

    // pkg/up -> pkg/.. is the shared folder, which holds pkg: a loop.
    std::os::unix::fs::symlink("..", shared.path().join("pkg/up")).unwrap();
    let error = pack_folder(folder.path()).unwrap_err();
    assert!(error.to_string().contains("links back"), "{error}");
}
