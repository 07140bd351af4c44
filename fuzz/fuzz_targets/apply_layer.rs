//! Applies arbitrary bytes as a layer (decompressed by magic, whiteouts on)
//! and as an ADD archive, inside a fresh directory, and checks that nothing
//! was created beside that directory: a hostile tar may fail, never escape
//! or panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(sentinel) = tempfile::tempdir() else { return };
    let root = sentinel.path().join("root");
    if std::fs::create_dir(&root).is_err() {
        return;
    }
    for whiteouts in [true, false] {
        let opts = kiln::layer::apply::ApplyOptions {
            whiteouts,
            same_owner: true,
            chown: None,
            devices: false,
            overlay: false,
        };
        if let Ok((reader, _)) = kiln::layer::apply::decompressed(std::io::Cursor::new(data.to_vec())) {
            let _ = kiln::layer::apply::apply(reader, &root, "", &opts);
        }
        let _ = kiln::layer::apply::apply(data, &root, "sub/dir", &opts);
    }
    let names: Vec<_> = std::fs::read_dir(sentinel.path())
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(names, vec![std::ffi::OsString::from("root")], "something escaped the root");
});
