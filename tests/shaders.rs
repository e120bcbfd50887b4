//! Every WGSL kernel is parsed and validated by naga, as the GPU will compile it (with the shared
//! helpers of `shaders/include/` appended), with no GPU needed, so a shader error fails fast
//! everywhere. Also checks the tree's promise: each shader file is registered, compiled in from
//! the current file, and has a CPU twin.

use std::path::{Path, PathBuf};

use cohort::gpu::shaders::Shader;

/// The crate root: the build's, or the current folder when the test binary was copied elsewhere
/// (e.g. staged to a GPU machine) and run from a copy of the tree.
fn root() -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR"));
    if built.join("shaders").is_dir() {
        built.to_path_buf()
    } else {
        std::env::current_dir().expect("a current folder")
    }
}

fn shader_files() -> Vec<PathBuf> {
    let dir = root().join("shaders");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("shaders/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wgsl"))
        .collect();
    files.sort();
    files
}

fn validate(name: &str, source: &str) {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
}

#[test]
fn every_kernel_validates_with_naga() {
    assert!(Shader::ALL.len() >= 10, "the full kernel set");
    for shader in Shader::ALL {
        validate(shader.file_name(), shader.source());
    }
}

#[test]
fn every_shader_file_is_compiled_in_and_has_a_cpu_twin() {
    let root = root();
    let files = shader_files();
    assert_eq!(
        files.len(),
        Shader::ALL.len(),
        "every file in shaders/ is registered: {files:?}"
    );
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let shader = Shader::ALL
            .iter()
            .find(|s| s.file_name() == name)
            .unwrap_or_else(|| panic!("{name} is not registered in gpu::shaders::Shader"));
        let twin = root.join("src/cpu").join(format!("{}.rs", shader.twin()));
        assert!(
            twin.exists(),
            "{name} has no CPU twin at {}",
            twin.display()
        );
        let on_disk = std::fs::read_to_string(&path).unwrap();
        assert!(
            shader.source().starts_with(&on_disk),
            "{name}: compiled-in source is stale"
        );
    }
}

#[test]
fn a_broken_shader_is_reported_by_naga() {
    // The validator really rejects errors: a type mismatch must not slip through.
    let source = "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }";
    let result = std::panic::catch_unwind(|| validate("broken", source));
    assert!(result.is_err());
}
