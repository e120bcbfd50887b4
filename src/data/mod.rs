//! Data: labelled data sets in host memory, their readers (IDX, CSV, the embedded UCI digits,
//! synthetic blobs), feature standardisation, and the seeded epoch order and mini-batches.

pub mod csv;
pub mod digits;
pub mod idx;
pub mod synthetic;

use std::path::PathBuf;

use crate::config::short_number;
use crate::error::{host_capacity, CohortError, Result};
use crate::rng::Rng;

/// A labelled data set held in host memory, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// `rows × cols` features.
    pub features: Vec<f32>,
    /// One label per row, each below `classes`.
    pub labels: Vec<u32>,
    /// Number of rows.
    pub rows: usize,
    /// Features per row.
    pub cols: usize,
    /// Number of classes.
    pub classes: usize,
}

impl Dataset {
    /// A data set after checking it ([`Dataset::validate`]).
    pub fn new(features: Vec<f32>, labels: Vec<u32>, cols: usize, classes: usize) -> Result<Self> {
        let data = Dataset {
            rows: labels.len(),
            features,
            labels,
            cols,
            classes,
        };
        data.validate()?;
        Ok(data)
    }

    /// Checks what [`Dataset::new`] promises, for a data set built or changed field by field:
    /// at least one row and one feature, `rows` labels and `rows × cols` features, finite
    /// features, at least two classes and labels below `classes`.
    pub fn validate(&self) -> Result<()> {
        if self.rows == 0 || self.cols == 0 {
            return Err(CohortError::EmptyData(
                "a data set needs at least one row and one feature".into(),
            ));
        }
        let rows = self.labels.len();
        if rows != self.rows || rows.checked_mul(self.cols) != Some(self.features.len()) {
            return Err(CohortError::shape(
                "dataset",
                format!(
                    "{} features and {rows} labels for {} rows of {}",
                    self.features.len(),
                    self.rows,
                    self.cols
                ),
            ));
        }
        if self.classes < 2 {
            return Err(CohortError::InvalidConfig(format!(
                "a classifier needs at least 2 classes, got {}",
                self.classes
            )));
        }
        if let Some(i) = self.features.iter().position(|v| !v.is_finite()) {
            return Err(CohortError::NonFinite {
                what: format!("feature at row {}, column {}", i / self.cols, i % self.cols),
            });
        }
        if let Some((row, &label)) = self
            .labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= self.classes)
        {
            return Err(CohortError::LabelOutOfRange {
                label,
                row,
                classes: self.classes,
            });
        }
        Ok(())
    }

    /// A hash of the rows, their order and sizes (features bit for bit, labels), for telling
    /// data sets apart: a checkpoint keeps the one it trained on. Not cryptographic.
    pub fn fingerprint(&self) -> u64 {
        fingerprint(
            &self.features,
            &self.labels,
            self.rows,
            self.cols,
            self.classes,
        )
    }

    /// The features of row `i`. Panics if `i >= rows`, like slice indexing.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.features[i * self.cols..(i + 1) * self.cols]
    }

    /// The given rows, in that order (repeats allowed), or [`CohortError::HostMemory`] where
    /// the host cannot hold the copy. Panics if an index is `>= rows`.
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset> {
        let (features, labels) = gathered_rows(&self.features, &self.labels, self.cols, indices)?;
        Ok(Dataset {
            features,
            labels,
            rows: indices.len(),
            cols: self.cols,
            classes: self.classes,
        })
    }

    /// Appends the given rows' features and labels to the output vectors (host-side batching).
    /// Panics if an index is `>= rows`.
    pub fn gather_batch(
        &self,
        indices: &[usize],
        features_out: &mut Vec<f32>,
        labels_out: &mut Vec<u32>,
    ) {
        append_rows(
            (&self.features, &self.labels, self.cols),
            indices,
            features_out,
            labels_out,
        );
    }

    /// A seeded shuffle, then `test_fraction` of the rows as the test part.
    pub fn split(&self, test_fraction: f64, seed: u64) -> Result<Split> {
        let parts = SplitRows::new(self.rows, test_fraction, seed)?;
        Ok(Split {
            train: self.subset(parts.train())?,
            test: self.subset(parts.test())?,
        })
    }
}

/// Which rows of a data set [`Dataset::split`] puts in each part: a seeded shuffle of the row
/// indices, the first `test_fraction` of them the test part.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitRows {
    order: Vec<usize>,
    test_rows: usize,
}

/// Appends rows `indices` of the rows in `features` (`cols` values each) and their `labels` to
/// the outputs. Panics if an index is past the rows.
fn append_rows(
    (features, labels, cols): (&[f32], &[u32], usize),
    indices: &[usize],
    features_out: &mut Vec<f32>,
    labels_out: &mut Vec<u32>,
) {
    for &i in indices {
        features_out.extend_from_slice(&features[i * cols..(i + 1) * cols]);
        labels_out.push(labels[i]);
    }
}

/// [`Dataset::fingerprint`] of the data set these fields would make (also for rows not made
/// into one: [`csv::Rows::fingerprint`]).
fn fingerprint(features: &[f32], labels: &[u32], rows: usize, cols: usize, classes: usize) -> u64 {
    // FNV-1a over 32-bit words.
    let words = [rows, cols, classes].map(|n| n as u32);
    let bits = features.iter().map(|v| v.to_bits());
    let words = words.into_iter().chain(labels.iter().copied()).chain(bits);
    words.fold(0xcbf2_9ce4_8422_2325, |hash: u64, w| {
        (hash ^ w as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Rows `indices` of the rows in `features` (`cols` values each) and their `labels`, copied in
/// that order into memory checked as [`host_capacity`] checks. Panics if an index is past the
/// rows.
pub(crate) fn gathered_rows(
    features: &[f32],
    labels: &[u32],
    cols: usize,
    indices: &[usize],
) -> Result<(Vec<f32>, Vec<u32>)> {
    let values = indices.len().saturating_mul(cols);
    let what = |part: &'static str| move || format!("the {part} of {} rows", indices.len());
    let mut features_out = host_capacity(values, what("features"))?;
    let mut labels_out = host_capacity(indices.len(), what("labels"))?;
    append_rows(
        (features, labels, cols),
        indices,
        &mut features_out,
        &mut labels_out,
    );
    Ok((features_out, labels_out))
}

impl SplitRows {
    /// The parts of `rows` rows; fails where `test_fraction` is outside (0, 1) or leaves a part
    /// empty.
    pub fn new(rows: usize, test_fraction: f64, seed: u64) -> Result<Self> {
        if !(test_fraction > 0.0 && test_fraction < 1.0) {
            return Err(CohortError::InvalidConfig(format!(
                "test fraction must be in (0, 1), got {}",
                short_number(test_fraction)
            )));
        }
        let mut order = row_indices(rows)?;
        Rng::new(seed).shuffle(&mut order);
        let test_rows = ((rows as f64) * test_fraction).round() as usize;
        if test_rows == 0 || test_rows == rows {
            return Err(CohortError::EmptyData(format!(
                "{rows} rows split at {} leave an empty part",
                short_number(test_fraction)
            )));
        }
        Ok(SplitRows { order, test_rows })
    }

    /// [`SplitRows::new`], but `None` where the rows do not split so (`test_fraction` outside
    /// (0, 1), or a part left empty): only [`CohortError::HostMemory`] is an error. For data
    /// that is scored whole and checked against the training part where it has one.
    pub fn where_they_split(rows: usize, test_fraction: f64, seed: u64) -> Result<Option<Self>> {
        match SplitRows::new(rows, test_fraction, seed) {
            Ok(parts) => Ok(Some(parts)),
            Err(e @ CohortError::HostMemory { .. }) => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// The training part's row indices, in the order the part holds them.
    pub fn train(&self) -> &[usize] {
        &self.order[self.test_rows..]
    }

    /// The test part's row indices, in the order the part holds them.
    pub fn test(&self) -> &[usize] {
        &self.order[..self.test_rows]
    }
}

/// Train and test parts of a data set.
#[derive(Clone, Debug)]
pub struct Split {
    /// Training rows.
    pub train: Dataset,
    /// Test rows.
    pub test: Dataset,
}

impl Split {
    /// Every row, the training part's first (the order `cohort predict` numbers them in), or
    /// [`CohortError::HostMemory`] where the host cannot hold the copy.
    pub fn joined(&self) -> Result<Dataset> {
        self.validate_compatible()?;
        let (train, test) = (&self.train, &self.test);
        let rows = train.rows + test.rows;
        let values = rows.saturating_mul(train.cols);
        let mut features = host_capacity(values, || format!("the features of {rows} rows"))?;
        features.extend_from_slice(&train.features);
        features.extend_from_slice(&test.features);
        let mut labels = host_capacity(rows, || format!("the labels of {rows} rows"))?;
        labels.extend_from_slice(&train.labels);
        labels.extend_from_slice(&test.labels);
        Dataset::new(features, labels, train.cols, train.classes)
    }

    /// Checks that both parts have the same features and classes.
    pub fn validate_compatible(&self) -> Result<()> {
        if self.train.cols != self.test.cols {
            return Err(CohortError::shape(
                "split",
                format!(
                    "train has {} features, test {}",
                    self.train.cols, self.test.cols
                ),
            ));
        }
        if self.train.classes != self.test.classes {
            return Err(CohortError::shape(
                "split",
                format!(
                    "train has {} classes, test {}",
                    self.train.classes, self.test.classes
                ),
            ));
        }
        Ok(())
    }
}

/// Standardisation, fitted on training data only: per feature, or one mean and deviation for all
/// features (better for images, whose rarely-lit border pixels have tiny per-pixel deviations
/// that would blow up the few test pixels that differ).
#[derive(Clone, Debug, PartialEq)]
pub struct Standardizer {
    /// Mean of each feature.
    pub mean: Vec<f32>,
    /// Standard deviation of each feature (1 for constant features, which then map to 0).
    pub std: Vec<f32>,
}

impl Standardizer {
    /// Fits means and standard deviations (computed in f64). A data set built field by field is
    /// checked first, as [`Dataset::new`] checks it (its sizes, finite features).
    pub fn fit(data: &Dataset) -> Result<Self> {
        data.validate()?;
        let n = data.rows as f64; // at least 1: validated
        let mut mean = vec![0.0f64; data.cols];
        for r in 0..data.rows {
            for (m, &v) in mean.iter_mut().zip(data.row(r)) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0.0f64; data.cols];
        for r in 0..data.rows {
            for ((s, &v), m) in var.iter_mut().zip(data.row(r)).zip(&mean) {
                *s += (v as f64 - m).powi(2);
            }
        }
        Ok(Standardizer {
            mean: mean.iter().map(|&m| m as f32).collect(),
            std: var
                .iter()
                .map(|&s| deviation_or_one((s / n).sqrt()))
                .collect(),
        })
    }

    /// One mean and standard deviation over every feature value (stored once per feature),
    /// after the checks of [`Self::fit`].
    pub fn fit_global(data: &Dataset) -> Result<Self> {
        data.validate()?;
        let n = data.features.len() as f64; // at least 1: validated
        let mean = data.features.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = data
            .features
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let sd = deviation_or_one(var.sqrt());
        Ok(Standardizer {
            mean: vec![mean as f32; data.cols],
            std: vec![sd; data.cols],
        })
    }

    /// Standardises `data` in place: `(x - mean) / std` per feature.
    pub fn apply(&self, data: &mut Dataset) -> Result<()> {
        if data.cols != self.mean.len() || self.std.len() != self.mean.len() {
            return Err(CohortError::shape(
                "standardize",
                format!(
                    "fitted on {} features ({} deviations), data has {}",
                    self.mean.len(),
                    self.std.len(),
                    data.cols
                ),
            ));
        }
        if data.rows.checked_mul(data.cols) != Some(data.features.len()) {
            return Err(CohortError::shape(
                "standardize",
                format!(
                    "{} features for {} rows of {}",
                    data.features.len(),
                    data.rows,
                    data.cols
                ),
            ));
        }
        self.apply_rows(&mut data.features)
    }

    /// Standardises rows of features held one after another, each as wide as the features
    /// fitted (rows to predict, without labels).
    pub fn apply_rows(&self, features: &mut [f32]) -> Result<()> {
        let cols = self.mean.len();
        if cols == 0 || self.std.len() != cols || !features.len().is_multiple_of(cols) {
            return Err(CohortError::shape(
                "standardize",
                format!(
                    "{} values are not whole rows of the {cols} features fitted ({} deviations)",
                    features.len(),
                    self.std.len()
                ),
            ));
        }
        for (r, row) in features.chunks_mut(cols).enumerate() {
            for (c, ((v, m), s)) in row.iter_mut().zip(&self.mean).zip(&self.std).enumerate() {
                let x = *v;
                let z = (x - m) / s;
                // Values near f32's limit can overflow in the subtraction alone: again in f64.
                *v = match z.is_finite() {
                    true => z,
                    false => ((f64::from(x) - f64::from(*m)) / f64::from(*s)) as f32,
                };
                if !v.is_finite() {
                    return Err(CohortError::NonFinite {
                        what: format!(
                            "feature {c} of row {r} standardised: ({} - {}) / {} is past \
                             f32's range",
                            short_number(x),
                            short_number(*m),
                            short_number(*s)
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

/// A standard deviation as f32, or 1 for a constant feature: one whose deviation is 0 (a
/// column of equal f32 values has exactly 0, its f64 mean being exact) or below f32's normal
/// range, where dividing by it would overflow. Features of tiny but real spread (values near
/// 1e-9) are scaled like any other: an absolute floor (1e-8 before 2026-12-06) left them unscaled
/// and so, beside features of order one, unseen.
fn deviation_or_one(sd: f64) -> f32 {
    let sd = sd as f32;
    if sd >= f32::MIN_POSITIVE {
        sd
    } else {
        1.0
    }
}

/// The order of training rows in `epoch`: a seeded permutation, the same for the same
/// `(seed, epoch)`, so resumed runs see the same batches ([`CohortError::HostMemory`] where the
/// host cannot hold it).
pub fn epoch_order(rows: usize, seed: u64, epoch: usize) -> Result<Vec<usize>> {
    let mut order = row_indices(rows)?;
    Rng::new(seed ^ (epoch as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)).shuffle(&mut order);
    Ok(order)
}

/// 0, 1, …, `rows` − 1, in memory checked as [`host_capacity`] checks.
fn row_indices(rows: usize) -> Result<Vec<usize>> {
    let mut order = host_capacity(rows, || format!("the order of {rows} rows"))?;
    order.extend(0..rows);
    Ok(order)
}

/// Mini-batches of `batch_size` rows from `order`; the last may be smaller. A `batch_size` of 0
/// is treated as 1.
pub fn batches(order: &[usize], batch_size: usize) -> impl Iterator<Item = &[usize]> {
    order.chunks(batch_size.max(1))
}

/// Where the data comes from, as the CLI names it.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSource {
    /// The UCI digits compiled into the crate.
    Digits,
    /// A folder of MNIST-style IDX files.
    Idx(PathBuf),
    /// A CSV file.
    Csv {
        /// The file.
        path: PathBuf,
        /// How to read it.
        options: csv::CsvOptions,
    },
    /// Synthetic Gaussian blobs.
    Blobs {
        /// Rows in all.
        rows: usize,
        /// Classes.
        classes: usize,
        /// Features.
        dims: usize,
        /// Seed.
        seed: u64,
    },
}

impl DataSource {
    /// Loads the train and test parts.
    pub fn load(&self) -> Result<Split> {
        match self {
            DataSource::Digits => digits::load(),
            DataSource::Idx(dir) => idx::load_dir(dir),
            DataSource::Csv { path, options } => Ok(csv::load(path, options)?.0),
            DataSource::Blobs {
                rows,
                classes,
                dims,
                seed,
            } => synthetic::blobs(*rows, *classes, *dims, *seed)?.split(0.2, *seed),
        }
    }
}

impl std::str::FromStr for DataSource {
    type Err = CohortError;

    /// `digits`, `idx:DIR`, `csv:FILE` (default [`csv::CsvOptions`]), `blobs` (2000 rows,
    /// 4 classes, 16 dims, seed 0) or `blobs:ROWS,CLASSES,DIMS[,SEED]`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            CohortError::InvalidConfig(format!("data '{s}': {why} (use digits, idx:DIR, csv:FILE or blobs:ROWS,CLASSES,DIMS[,SEED])"))
        };
        match s.split_once(':') {
            None if s == "digits" => Ok(DataSource::Digits),
            None if s == "blobs" => Ok(DataSource::Blobs {
                rows: 2000,
                classes: 4,
                dims: 16,
                seed: 0,
            }),
            Some(("idx", dir)) if !dir.is_empty() => Ok(DataSource::Idx(dir.into())),
            Some(("csv", file)) if !file.is_empty() => Ok(DataSource::Csv {
                path: file.into(),
                options: Default::default(),
            }),
            Some(("blobs", spec)) => {
                // Sizes parse as usize, so a count the host cannot address (over 2³² on a
                // 32-bit target) is refused here rather than cut short by a cast.
                let parts: Vec<&str> = spec.split(',').map(str::trim).collect();
                let size = |v: &str| {
                    v.parse::<usize>()
                        .map_err(|e| bad(&format!("'{v}' is not a size here ({e})")))
                };
                let (rows, classes, dims, seed) = match parts[..] {
                    [rows, classes, dims] => (rows, classes, dims, None),
                    [rows, classes, dims, seed] => (rows, classes, dims, Some(seed)),
                    _ => return Err(bad("blobs wants ROWS,CLASSES,DIMS[,SEED]")),
                };
                let seed = match seed {
                    Some(v) => v
                        .parse::<u64>()
                        .map_err(|e| bad(&format!("seed '{v}' is not a number ({e})")))?,
                    None => 0,
                };
                Ok(DataSource::Blobs {
                    rows: size(rows)?,
                    classes: size(classes)?,
                    dims: size(dims)?,
                    seed,
                })
            }
            _ => Err(bad("unknown source")),
        }
    }
}

/// Reads a file, decompressing it when it starts with the gzip magic bytes; a file larger (as
/// stored, or decompressed) than the host can load and convert is [`CohortError::HostMemory`].
pub(crate) fn read_maybe_gzip(path: &std::path::Path) -> Result<Vec<u8>> {
    read_checking(path, |_, _| Ok(()))
}

/// [`read_maybe_gzip`], calling `check` after each [`READ_CHUNK`] read (decompressed, where
/// the file is gzipped) with all the bytes read so far and whether they are the whole file:
/// its error ends the reading there, so that a file of the wrong kind is refused at its
/// first mebibyte, not after all of it.
pub(crate) fn read_checking(
    path: &std::path::Path,
    check: impl FnMut(&[u8], bool) -> Result<()>,
) -> Result<Vec<u8>> {
    read_within(path, crate::error::data_file_limit(), check)
}

/// The bytes [`read_checking`] reads between two checks.
const READ_CHUNK: u64 = 1 << 20;

/// [`read_checking`] with at most `limit` bytes, stored or decompressed: a small file that
/// inflates beyond memory (a "gzip bomb") is an error rather than an abort. A gzipped file is
/// decompressed as it is read, so its compressed bytes are never all held beside the others.
fn read_within(
    path: &std::path::Path,
    limit: u64,
    mut check: impl FnMut(&[u8], bool) -> Result<()>,
) -> Result<Vec<u8>> {
    use std::io::Read;
    let stored = std::fs::metadata(path)
        .map_err(|e| CohortError::io(path, e))?
        .len();
    let too_large = |bytes: u64| CohortError::HostMemory {
        what: format!(
            "loading {} (over {limit} bytes, a fifth of the memory available: its values \
             take up to four times as much)",
            path.display()
        ),
        bytes,
    };
    if stored > limit {
        return Err(too_large(stored));
    }
    let mut file = std::fs::File::open(path).map_err(|e| CohortError::io(path, e))?;
    // The first two bytes, however the file hands them over (a pipe may give one at a time),
    // tell gzip apart; they are then read again with the rest.
    let mut head = Vec::with_capacity(2);
    (&mut file)
        .take(2)
        .read_to_end(&mut head)
        .map_err(|e| CohortError::io(path, e))?;
    let gzipped = head == [0x1f, 0x8b];
    let whole = std::io::Cursor::new(head).chain(file);
    let mut reader: Box<dyn Read> = match gzipped {
        true => Box::new(flate2::read::MultiGzDecoder::new(whole)),
        false => Box::new(whole),
    };
    let mut out = Vec::new();
    loop {
        let read = (&mut reader)
            .take(READ_CHUNK)
            .read_to_end(&mut out)
            .map_err(|e| match gzipped {
                true => CohortError::corrupt(path, format!("gzip: {e}")),
                false => CohortError::io(path, e),
            })?;
        if out.len() as u64 > limit {
            return Err(match gzipped {
                true => too_large(out.len() as u64),
                // Its size unknown (a device or pipe): at least this much.
                false => CohortError::HostMemory {
                    what: format!(
                        "loading {}, which goes on past {limit} bytes (a fifth of the memory \
                         available)",
                        path.display()
                    ),
                    bytes: out.len() as u64,
                },
            });
        }
        check(&out, read == 0)?;
        if read == 0 {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_beyond_the_limit_are_refused_stored_or_inflated() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("cohort-limit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; 1 << 20]).unwrap();
        let bomb = dir.join("bomb.gz");
        std::fs::write(&bomb, gz.finish().unwrap()).unwrap();
        assert_eq!(
            read_within(&bomb, 1 << 20, |_, _| Ok(())).unwrap().len(),
            1 << 20
        );
        let plain = dir.join("plain");
        std::fs::write(&plain, vec![7u8; 5000]).unwrap();
        assert_eq!(
            read_within(&plain, 5000, |_, _| Ok(())).unwrap().len(),
            5000
        );
        // A few KiB that inflate to 1 MiB, and a plain file, each a byte over the limit.
        for (path, limit) in [(&bomb, (1 << 20) - 1), (&plain, 4999)] {
            match read_within(path, limit, |_, _| Ok(())) {
                Err(CohortError::HostMemory { what, bytes }) => {
                    assert!(what.contains("loading") && bytes > limit, "{what}")
                }
                other => panic!("expected HostMemory, got {other:?}"),
            }
        }
        // A device that reports no size and never ends.
        #[cfg(unix)]
        match read_within(std::path::Path::new("/dev/zero"), 4096, |_, _| Ok(())) {
            Err(CohortError::HostMemory { what, .. }) => {
                assert!(
                    what.ends_with("goes on past 4096 bytes (a fifth of the memory available)"),
                    "{what}"
                )
            }
            other => panic!("expected HostMemory, got {other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_gzipped_pipe_handing_over_a_byte_at_a_time_is_decompressed() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("cohort-pipe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("data.csv.gz");
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo reads nothing else.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let text = b"1,2,0\n3,4,1\n".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&text).unwrap();
        let bytes = gz.finish().unwrap();
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                let mut pipe = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
                for byte in bytes {
                    pipe.write_all(&[byte]).unwrap();
                    pipe.flush().unwrap();
                    std::thread::sleep(std::time::Duration::from_micros(50));
                }
            })
        };
        let got = read_within(&fifo, 1 << 20, |_, _| Ok(())).unwrap();
        writer.join().unwrap();
        assert_eq!(
            got, text,
            "decompressed although its first read held one byte"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tiny() -> Dataset {
        Dataset::new(
            (0..20).map(|v| v as f32).collect(),
            vec![0, 1, 2, 1, 0],
            4,
            3,
        )
        .unwrap()
    }

    #[test]
    fn dataset_checks_its_input() {
        assert!(matches!(
            Dataset::new(vec![], vec![], 4, 3),
            Err(CohortError::EmptyData(_))
        ));
        assert!(matches!(
            Dataset::new(vec![0.0; 7], vec![0, 1], 4, 3),
            Err(CohortError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            Dataset::new(vec![0.0, f32::NAN], vec![0], 2, 3),
            Err(CohortError::NonFinite { .. })
        ));
        let err = Dataset::new(vec![0.0; 4], vec![0, 3], 2, 3).unwrap_err();
        assert!(
            matches!(
                err,
                CohortError::LabelOutOfRange {
                    label: 3,
                    row: 1,
                    classes: 3
                }
            ),
            "{err}"
        );
        assert!(matches!(
            Dataset::new(vec![0.0; 2], vec![0], 2, 1),
            Err(CohortError::InvalidConfig(_))
        ));
    }

    #[test]
    fn split_and_subset_keep_rows_intact() {
        let d = tiny();
        let s = d.split(0.4, 3).unwrap();
        assert_eq!((s.train.rows, s.test.rows), (3, 2));
        let mut all: Vec<f32> = s
            .train
            .features
            .iter()
            .chain(&s.test.features)
            .copied()
            .collect();
        all.sort_by(f32::total_cmp);
        assert_eq!(all, d.features);
        assert_eq!(d.subset(&[4, 0]).unwrap().labels, vec![0, 0]);
        assert_eq!(d.subset(&[2]).unwrap().features, vec![8.0, 9.0, 10.0, 11.0]);
        assert!(d.split(1.0, 0).is_err() && d.split(0.01, 0).is_err());
    }

    #[test]
    fn a_split_takes_its_parts_rows_as_split_rows_lists_them() {
        let d = synthetic::blobs(60, 3, 4, 5).unwrap();
        for (fraction, seed) in [(0.2, 0), (0.5, 7), (0.9, 3)] {
            let parts = SplitRows::new(d.rows, fraction, seed).unwrap();
            let mut rows: Vec<usize> = parts.train().iter().chain(parts.test()).copied().collect();
            rows.sort_unstable();
            assert_eq!(
                rows,
                (0..d.rows).collect::<Vec<_>>(),
                "every row in one part"
            );
            let test_rows = (d.rows as f64 * fraction).round() as usize;
            assert_eq!(
                parts.test().len(),
                test_rows,
                "the test fraction of the rows"
            );
            let split = d.split(fraction, seed).unwrap();
            assert_eq!(split.test, d.subset(parts.test()).unwrap());
            assert_eq!(split.train, d.subset(parts.train()).unwrap());
        }
        // A seeded shuffle: another seed takes other rows, and neither takes the last rows.
        let test = |seed| SplitRows::new(60, 0.2, seed).unwrap().test().to_vec();
        assert_ne!(test(0), test(1));
        assert!(test(0).iter().any(|&r| r < 48) && test(1).iter().any(|&r| r < 48));
        assert!(d.split(0.0, 0).is_err() && d.split(0.001, 0).is_err());
    }

    #[test]
    fn standardizer_centres_scales_and_leaves_constant_columns_at_zero() {
        let mut d = Dataset::new(vec![1.0, 5.0, 3.0, 5.0, 5.0, 5.0], vec![0, 1, 0], 2, 2).unwrap();
        let s = Standardizer::fit(&d).unwrap();
        s.apply(&mut d).unwrap();
        let col0: Vec<f32> = (0..3).map(|r| d.row(r)[0]).collect();
        let mean: f32 = col0.iter().sum::<f32>() / 3.0;
        let var: f32 = col0.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 3.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "{col0:?}");
        assert!((0..3).all(|r| d.row(r)[1] == 0.0));
        // A feature of tiny spread is scaled like any other, per feature and globally; one
        // below f32's normal range counts as constant.
        for scale in [1e-9f32, 1e-30] {
            let tiny = Dataset::new(vec![scale, -scale, 0.0, 2.0 * scale], vec![0; 4], 1, 2);
            let tiny = tiny.unwrap();
            for s in [Standardizer::fit(&tiny), Standardizer::fit_global(&tiny)].map(Result::unwrap)
            {
                let mut t = tiny.clone();
                s.apply(&mut t).unwrap();
                let var: f32 = t.features.iter().map(|v| v * v).sum::<f32>() / 4.0;
                assert!((var - 1.0).abs() < 1e-5, "{scale}: {:?}", t.features);
            }
        }
        let subnormal = Dataset::new(vec![1e-39, 0.0], vec![0, 1], 1, 2).unwrap();
        assert_eq!(Standardizer::fit(&subnormal).unwrap().std, [1.0]);
        let mut wide = Dataset::new(vec![0.0; 3], vec![0], 3, 2).unwrap();
        assert!(s.apply(&mut wide).is_err());
        // Near f32's limit the subtraction alone overflows: f64 gives the finite value.
        let s = Standardizer {
            mean: vec![7.5e37],
            std: vec![1.3e38],
        };
        let mut far = vec![-3e38, 5.0];
        s.apply_rows(&mut far).unwrap();
        assert!(
            (far[0] + 2.884_615_4).abs() < 1e-5 && far[1].abs() < 1.0,
            "{far:?}"
        );
        // A value that stays past it is an error naming its feature and row.
        let tiny_std = Standardizer {
            mean: vec![0.0, 0.0],
            std: vec![1.0, 1e-30],
        };
        let err = tiny_std.apply_rows(&mut [1.0, 2.0, 3.0, 1e10]).unwrap_err();
        assert!(matches!(err, CohortError::NonFinite { .. }), "{err}");
        assert!(
            err.to_string().contains("feature 1 of row 1 standardised"),
            "{err}"
        );
    }

    #[test]
    fn blobs_source_loads_an_80_20_split() {
        let s = DataSource::Blobs {
            rows: 50,
            classes: 3,
            dims: 4,
            seed: 7,
        }
        .load()
        .unwrap();
        assert_eq!((s.train.rows, s.test.rows), (40, 10));
        s.validate_compatible().unwrap();
        let again = "blobs:50,3,4,7"
            .parse::<DataSource>()
            .unwrap()
            .load()
            .unwrap();
        assert_eq!((s.train, s.test), (again.train, again.test));
        let zero = "blobs:0,3,4".parse::<DataSource>().unwrap().load();
        assert!(matches!(zero, Err(CohortError::EmptyData(_))));
    }

    #[test]
    fn split_parts_must_agree() {
        let d = tiny();
        let mut s = d.split(0.4, 1).unwrap();
        s.validate_compatible().unwrap();
        s.test.classes = 4;
        assert!(matches!(
            s.validate_compatible(),
            Err(CohortError::ShapeMismatch { .. })
        ));
        let mut s = d.split(0.4, 1).unwrap();
        s.test = Dataset::new(vec![0.0; 3], vec![0], 3, 3).unwrap();
        assert!(s.validate_compatible().is_err());
    }

    #[test]
    fn gather_batch_appends_rows_in_order() {
        let d = tiny();
        let (mut x, mut y) = (vec![-1.0], vec![9]);
        d.gather_batch(&[3, 1], &mut x, &mut y);
        assert_eq!(x, vec![-1.0, 12.0, 13.0, 14.0, 15.0, 4.0, 5.0, 6.0, 7.0]);
        assert_eq!(y, vec![9, 1, 1]);
        assert_eq!(d.row(4), &[16.0, 17.0, 18.0, 19.0]);
    }

    #[test]
    fn standardizer_on_blobs_gives_zero_mean_unit_deviation_per_column() {
        let split = synthetic::blobs(400, 3, 5, 2)
            .unwrap()
            .split(0.25, 2)
            .unwrap();
        let (mut train, mut test) = (split.train, split.test);
        let s = Standardizer::fit(&train).unwrap();
        let mut raw = test.features.clone();
        s.apply(&mut train).unwrap();
        s.apply(&mut test).unwrap();
        for c in 0..train.cols {
            let col: Vec<f64> = (0..train.rows).map(|r| train.row(r)[c] as f64).collect();
            let mean = col.iter().sum::<f64>() / col.len() as f64;
            let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / col.len() as f64;
            assert!(
                mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4,
                "column {c}: {mean} {var}"
            );
        }
        assert!(test.features.iter().all(|v| v.is_finite()));
        // Rows without labels, standardised alike; partial rows refused.
        s.apply_rows(&mut raw).unwrap();
        assert_eq!(raw, test.features);
        raw.pop();
        assert!(matches!(
            s.apply_rows(&mut raw),
            Err(CohortError::ShapeMismatch { .. })
        ));
        let mut broken = train.clone();
        broken.features.pop();
        assert!(matches!(
            s.apply(&mut broken),
            Err(CohortError::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn global_standardisation_uses_one_mean_and_deviation() {
        let mut d = Dataset::new(vec![0.0, 2.0, 4.0, 6.0], vec![0, 1], 2, 2).unwrap();
        let s = Standardizer::fit_global(&d).unwrap();
        assert_eq!(s.mean, vec![3.0, 3.0]);
        s.apply(&mut d).unwrap();
        let var: f32 = d.features.iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!((var - 1.0).abs() < 1e-6 && d.features.iter().sum::<f32>().abs() < 1e-6);
    }

    #[test]
    fn epoch_order_is_a_seeded_permutation_and_batches_are_ragged() {
        let order = |rows, seed, epoch| epoch_order(rows, seed, epoch).unwrap();
        let a = order(100, 5, 1);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, order(100, 5, 1));
        assert_ne!(a, order(100, 5, 2));
        assert_ne!(a, order(100, 6, 1));
        let sizes: Vec<usize> = batches(&a, 32).map(|b| b.len()).collect();
        assert_eq!(sizes, vec![32, 32, 32, 4]);
        let joined: Vec<usize> = batches(&a, 32).flatten().copied().collect();
        assert_eq!(joined, a);
        assert_eq!(batches(&a, 100).count(), 1);
        assert_eq!(batches(&a, 0).count(), 100);
        assert!(order(0, 5, 1).is_empty());
        // An order no host holds (one index past isize::MAX bytes) is an error, not an abort.
        let past_any_vec = isize::MAX as usize / std::mem::size_of::<usize>() + 1;
        let err = epoch_order(past_any_vec, 5, 1)
            .map(|o| o.len())
            .unwrap_err();
        assert!(matches!(err, CohortError::HostMemory { .. }), "{err}");
    }

    #[test]
    fn data_sources_parse() {
        assert_eq!("digits".parse::<DataSource>().unwrap(), DataSource::Digits);
        assert_eq!(
            "idx:/x".parse::<DataSource>().unwrap(),
            DataSource::Idx("/x".into())
        );
        assert!(matches!(
            "csv:a.csv".parse::<DataSource>().unwrap(),
            DataSource::Csv { .. }
        ));
        assert_eq!(
            "blobs:100,3,5,9".parse::<DataSource>().unwrap(),
            DataSource::Blobs {
                rows: 100,
                classes: 3,
                dims: 5,
                seed: 9
            }
        );
        assert_eq!(
            "blobs".parse::<DataSource>().unwrap(),
            DataSource::Blobs {
                rows: 2000,
                classes: 4,
                dims: 16,
                seed: 0
            }
        );
        assert_eq!(
            "csv:dir/a.csv".parse::<DataSource>().unwrap(),
            DataSource::Csv {
                path: "dir/a.csv".into(),
                options: csv::CsvOptions::default()
            }
        );
        assert!(matches!(
            "blobs:10,3,2".parse::<DataSource>().unwrap(),
            DataSource::Blobs { seed: 0, .. }
        ));
        for bad in [
            "mnist",
            "",
            "idx:",
            "blobs:",
            "blobs:1,2",
            "blobs:1,2,3,4,5",
            "blobs:a,b,c",
            "blobs:-1,2,3",
            // One past what the host can address (2³² on 32-bit targets): refused, not cut.
            &format!("blobs:{},2,3", usize::MAX as u128 + 1),
            &format!("blobs:1,2,3,{}", u64::MAX as u128 + 1),
            "csv:",
            "digits:x",
        ] {
            assert!(
                matches!(
                    bad.parse::<DataSource>(),
                    Err(CohortError::InvalidConfig(_))
                ),
                "{bad}"
            );
        }
    }
}
