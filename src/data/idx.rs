//! The IDX format of MNIST and Fashion-MNIST: a big-endian header (magic `0x00000803` for images
//! `[n, h, w]`, `0x00000801` for labels `[n]`), then raw bytes. Plain or gzipped files both work.

use std::path::Path;

use super::{read_maybe_gzip, Dataset, Split};
use crate::checkpoint::write_atomic;
use crate::error::{host_vec, CohortError, Result};

const IMAGES: u32 = 0x0000_0803;
const LABELS: u32 = 0x0000_0801;

fn header(path: &Path, bytes: &[u8], magic: u32, dims: usize) -> Result<Vec<usize>> {
    let need = 4 + 4 * dims;
    if bytes.len() < need {
        return Err(CohortError::corrupt(
            path,
            format!("{} bytes is shorter than the IDX header", bytes.len()),
        ));
    }
    let word = |i: usize| {
        u32::from_be_bytes([
            bytes[4 * i],
            bytes[4 * i + 1],
            bytes[4 * i + 2],
            bytes[4 * i + 3],
        ])
    };
    if word(0) != magic {
        return Err(CohortError::corrupt(
            path,
            format!("magic {:#010x}, expected {magic:#010x}", word(0)),
        ));
    }
    let sizes: Vec<usize> = (1..=dims).map(|i| word(i) as usize).collect();
    let body = sizes
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| CohortError::corrupt(path, format!("header sizes {sizes:?} overflow")))?;
    if bytes.len() - need != body {
        return Err(CohortError::corrupt(
            path,
            format!(
                "header promises {body} data bytes, the file has {}",
                bytes.len() - need
            ),
        ));
    }
    Ok(sizes)
}

/// Reads an image file: pixels scaled to [0, 1], with the row count and pixels per image.
pub fn read_images(path: impl AsRef<Path>) -> Result<(Vec<f32>, usize, usize)> {
    let path = path.as_ref();
    let (pixels, n, [h, w]) = read_image_grid(path)?;
    Ok((pixels, n, h * w))
}

/// As [`read_images`], with each image's height and width.
fn read_image_grid(path: &Path) -> Result<(Vec<f32>, usize, [usize; 2])> {
    let bytes = read_maybe_gzip(path)?;
    let dims = header(path, &bytes, IMAGES, 3)?;
    let (n, cols) = (dims[0], dims[1] * dims[2]);
    if n == 0 || cols == 0 {
        return Err(CohortError::EmptyData(format!(
            "{} holds no images",
            path.display()
        )));
    }
    let mut pixels: Vec<f32> = host_vec(bytes.len() - 16, || {
        format!("the pixels of {}", path.display())
    })?;
    for (p, &b) in pixels.iter_mut().zip(&bytes[16..]) {
        *p = b as f32 / 255.0;
    }
    Ok((pixels, n, [dims[1], dims[2]]))
}

/// Reads a label file.
pub fn read_labels(path: impl AsRef<Path>) -> Result<Vec<u32>> {
    let path = path.as_ref();
    let bytes = read_maybe_gzip(path)?;
    header(path, &bytes, LABELS, 1)?;
    Ok(bytes[8..].iter().map(|&b| b as u32).collect())
}

/// `dir`'s file `name`, gzipped (`name.gz`, looked for first) or not; an error naming both
/// where neither is there.
fn find(dir: &Path, name: &str) -> Result<std::path::PathBuf> {
    let (gz, plain) = (dir.join(format!("{name}.gz")), dir.join(name));
    match (gz.exists(), plain.exists()) {
        (true, _) => Ok(gz),
        (false, true) => Ok(plain),
        (false, false) => Err(CohortError::io(
            plain,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("not found, nor {name}.gz beside it"),
            ),
        )),
    }
}

/// The files [`load_dir`] may read from `dir`, plain and gzipped, there now or not (a `.gz`
/// written beside a plain file would be read in its place), so that a caller can keep its
/// outputs off them.
pub fn data_files(dir: impl AsRef<Path>) -> Vec<std::path::PathBuf> {
    let dir = dir.as_ref();
    let parts = ["train", "t10k"].iter().flat_map(|part| {
        ["images-idx3-ubyte", "labels-idx1-ubyte"].map(|file| format!("{part}-{file}"))
    });
    parts
        .flat_map(|name| [dir.join(format!("{name}.gz")), dir.join(name)])
        .collect()
}

fn part(dir: &Path, prefix: &str) -> Result<(Vec<f32>, Vec<u32>, [usize; 2])> {
    let images = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let (pixels, n, grid) = read_image_grid(&images)?;
    let labels = read_labels(&find(dir, &format!("{prefix}-labels-idx1-ubyte"))?)?;
    if labels.len() != n {
        return Err(CohortError::corrupt(
            images,
            format!("{n} images but {} labels", labels.len()),
        ));
    }
    Ok((pixels, labels, grid))
}

/// Loads `train-*` and `t10k-*` image and label files from `dir` (each plain or `.gz`).
/// Classes are the largest label of either part plus one, and at least 10 (MNIST's digits, the
/// format's convention; checkpoints of IDX data record their rows with that count).
pub fn load_dir(dir: impl AsRef<Path>) -> Result<Split> {
    let dir = dir.as_ref();
    let (train_x, train_y, [h, w]) = part(dir, "train")?;
    let (test_x, test_y, [th, tw]) = part(dir, "t10k")?;
    // The same shape, not only as many pixels (14×56 test images for a 28×28 model).
    if [h, w] != [th, tw] {
        return Err(CohortError::corrupt(
            dir,
            format!("train images are {h}×{w}, test images {th}×{tw}"),
        ));
    }
    let cols = h * w;
    let max = train_y.iter().chain(&test_y).copied().max().unwrap_or(0) as usize;
    let classes = (max + 1).max(10);
    Ok(Split {
        train: Dataset::new(train_x, train_y, cols, classes)?,
        test: Dataset::new(test_x, test_y, cols, classes)?,
    })
}

fn idx_size(v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| CohortError::InvalidConfig(format!("IDX size {v} exceeds u32")))
}

/// Writes an uncompressed image file (for tests and tools), atomically; `pixels` must hold
/// `n × h × w` bytes.
pub fn write_images(
    path: impl AsRef<Path>,
    pixels: &[u8],
    n: usize,
    h: usize,
    w: usize,
) -> Result<()> {
    let path = path.as_ref();
    let (n, h, w) = (idx_size(n)?, idx_size(h)?, idx_size(w)?);
    if (n as u128) * (h as u128) * (w as u128) != pixels.len() as u128 {
        return Err(CohortError::shape(
            "write_images",
            format!("{} bytes for {n} images of {h}x{w}", pixels.len()),
        ));
    }
    let mut out = Vec::with_capacity(16 + pixels.len());
    for v in [IMAGES, n, h, w] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(pixels);
    write_atomic(path, &out)
}

/// Writes an uncompressed label file (for tests and tools), atomically.
pub fn write_labels(path: impl AsRef<Path>, labels: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let mut out = Vec::with_capacity(8 + labels.len());
    for v in [LABELS, idx_size(labels.len())?] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(labels);
    write_atomic(path, &out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("cohort-idx-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn gzip(path: &Path) {
        let raw = std::fs::read(path).unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&raw).unwrap();
        std::fs::write(path.with_extension("gz-tmp"), enc.finish().unwrap()).unwrap();
        std::fs::remove_file(path).unwrap();
        std::fs::rename(
            path.with_extension("gz-tmp"),
            format!("{}.gz", path.display()),
        )
        .unwrap();
    }

    #[test]
    fn round_trip_plain_and_gzipped() {
        let d = temp_dir("rt");
        let pixels: Vec<u8> = (0..3 * 4).map(|v| (v * 20) as u8).collect();
        write_images(d.join("train-images-idx3-ubyte"), &pixels, 3, 2, 2).unwrap();
        write_labels(d.join("train-labels-idx1-ubyte"), &[1, 0, 9]).unwrap();
        write_images(d.join("t10k-images-idx3-ubyte"), &pixels[..8], 2, 2, 2).unwrap();
        write_labels(d.join("t10k-labels-idx1-ubyte"), &[2, 3]).unwrap();
        gzip(&d.join("t10k-images-idx3-ubyte"));
        gzip(&d.join("train-labels-idx1-ubyte"));
        assert!(d.join("t10k-images-idx3-ubyte.gz").exists());
        let split = load_dir(&d).unwrap();
        assert_eq!(
            (split.train.rows, split.train.cols, split.train.classes),
            (3, 4, 10)
        );
        assert_eq!((split.test.rows, split.test.cols), (2, 4));
        assert_eq!(split.train.labels, vec![1, 0, 9]);
        assert_eq!(split.test.labels, vec![2, 3]);
        let expect: Vec<f32> = pixels.iter().map(|&b| b as f32 / 255.0).collect();
        assert_eq!(split.train.features, expect);
        assert_eq!(split.test.features, expect[..8]);
        let (x, n, cols) = read_images(d.join("t10k-images-idx3-ubyte.gz")).unwrap();
        assert_eq!((x, n, cols), (expect[..8].to_vec(), 2, 4));
        // gzip is detected by its magic bytes, not by the name
        std::fs::rename(
            d.join("t10k-images-idx3-ubyte.gz"),
            d.join("t10k-images-idx3-ubyte"),
        )
        .unwrap();
        assert_eq!(load_dir(&d).unwrap().test, split.test);
        // Neither name there: the error names both.
        std::fs::remove_file(d.join("t10k-images-idx3-ubyte")).unwrap();
        let err = load_dir(&d).unwrap_err().to_string();
        assert!(
            err.contains("t10k-images-idx3-ubyte: not found, nor t10k-images-idx3-ubyte.gz"),
            "{err}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn classes_are_the_largest_label_of_either_part_plus_one_and_at_least_ten() {
        let d = temp_dir("classes");
        write_images(d.join("train-images-idx3-ubyte"), &[0, 255], 2, 1, 1).unwrap();
        write_images(d.join("t10k-images-idx3-ubyte"), &[7], 1, 1, 1).unwrap();
        for (train, test, classes) in [([0, 3], 11, 12), ([0, 12], 2, 13), ([0, 1], 1, 10)] {
            write_labels(d.join("train-labels-idx1-ubyte"), &train).unwrap();
            write_labels(d.join("t10k-labels-idx1-ubyte"), &[test]).unwrap();
            let s = load_dir(&d).unwrap();
            assert_eq!((s.train.classes, s.test.classes), (classes, classes));
            assert_eq!(s.train.features, vec![0.0, 1.0]);
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn mismatched_counts_and_empty_files_are_errors() {
        let d = temp_dir("counts");
        write_images(d.join("train-images-idx3-ubyte"), &[1, 2, 3], 3, 1, 1).unwrap();
        write_labels(d.join("train-labels-idx1-ubyte"), &[0, 1]).unwrap();
        write_images(d.join("t10k-images-idx3-ubyte"), &[1], 1, 1, 1).unwrap();
        write_labels(d.join("t10k-labels-idx1-ubyte"), &[0]).unwrap();
        let err = load_dir(&d).unwrap_err();
        assert!(
            matches!(err, CohortError::CorruptFile { .. })
                && err.to_string().contains("3 images but 2 labels"),
            "{err}"
        );
        write_images(d.join("train-images-idx3-ubyte"), &[], 0, 28, 28).unwrap();
        assert!(matches!(
            read_images(d.join("train-images-idx3-ubyte")),
            Err(CohortError::EmptyData(_))
        ));
        // test images of another size than the training images
        write_images(d.join("train-images-idx3-ubyte"), &[1, 2, 3, 4], 2, 1, 2).unwrap();
        assert!(matches!(load_dir(&d), Err(CohortError::CorruptFile { .. })));
        // ... or of another shape with as many pixels (2×2 training images, 1×4 test images)
        write_images(d.join("train-images-idx3-ubyte"), &[1; 8], 2, 2, 2).unwrap();
        write_images(d.join("t10k-images-idx3-ubyte"), &[1; 4], 1, 1, 4).unwrap();
        let err = load_dir(&d).unwrap_err();
        assert!(
            err.to_string()
                .contains("train images are 2×2, test images 1×4"),
            "{err}"
        );
        // sizes whose product overflows are rejected, not multiplied
        let f = d.join("huge");
        let mut bytes = Vec::new();
        for v in [IMAGES, u32::MAX, u32::MAX, u32::MAX] {
            bytes.extend_from_slice(&v.to_be_bytes());
        }
        std::fs::write(&f, bytes).unwrap();
        assert!(matches!(
            read_images(&f),
            Err(CohortError::CorruptFile { .. })
        ));
        assert!(write_images(&f, &[0; 3], 2, 1, 1).is_err());
        // a corrupt gzip stream
        std::fs::write(&f, [0x1f, 0x8b, 0, 1, 2]).unwrap();
        assert!(matches!(
            read_labels(&f),
            Err(CohortError::CorruptFile { .. })
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_files_are_errors() {
        let d = temp_dir("bad");
        let f = d.join("x");
        write_labels(&f, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 0]).unwrap();
        assert_eq!(read_labels(&f).unwrap(), vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 0]);
        let err = read_images(&f).unwrap_err();
        assert!(
            matches!(err, CohortError::CorruptFile { .. }) && err.to_string().contains("magic"),
            "{err}"
        );
        let mut bytes = std::fs::read(&f).unwrap();
        bytes.pop();
        std::fs::write(&f, &bytes).unwrap();
        let err = read_labels(&f).unwrap_err();
        assert!(
            matches!(err, CohortError::CorruptFile { .. }) && err.to_string().contains("promises"),
            "{err}"
        );
        std::fs::write(&f, [0u8, 0]).unwrap();
        assert!(
            matches!(read_labels(&f), Err(CohortError::CorruptFile { .. })),
            "short header"
        );
        assert!(matches!(
            read_labels(d.join("missing")),
            Err(CohortError::Io { .. })
        ));
        assert!(matches!(load_dir(&d), Err(CohortError::Io { .. })));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn reads_the_shared_mnist10k_when_present() {
        let dir = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/data/mnist10k"
        ));
        if !dir.exists() {
            // Past the test harness's capture, as the integration tests' skips are.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "\n**** SKIPPED: {} not found; the MNIST reader was only tested on generated files ****\n",
                dir.display()
            );
            return;
        }
        let split = load_dir(dir).unwrap();
        assert_eq!((split.train.rows, split.test.rows), (8000, 2000));
        assert_eq!((split.train.cols, split.train.classes), (784, 10));
    }
}
