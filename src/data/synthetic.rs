//! Synthetic data: Gaussian blobs, for benchmarks and scaling tests of any size.

use super::Dataset;
use crate::error::{host_vec, CohortError, Result};
use crate::rng::Rng;

/// `rows` points in `dims` dimensions around one centre per class (centres drawn from N(0, 3²),
/// points from N(centre, 1)), labels round-robin, so at most `rows` classes. The same seed
/// gives the same data.
pub fn blobs(rows: usize, classes: usize, dims: usize, seed: u64) -> Result<Dataset> {
    if rows == 0 || dims == 0 {
        return Err(CohortError::EmptyData(
            "blobs need rows and dimensions".into(),
        ));
    }
    if classes < 2 {
        return Err(CohortError::InvalidConfig(format!(
            "blobs need at least 2 classes, got {classes}"
        )));
    }
    let too_big = |what: &str, n: usize| {
        CohortError::InvalidConfig(format!(
            "blobs of {n} {what} × {dims} dimensions are too large"
        ))
    };
    let size = rows
        .checked_mul(dims)
        .ok_or_else(|| too_big("rows", rows))?;
    classes
        .checked_mul(dims)
        .ok_or_else(|| too_big("classes", classes))?;
    if classes > rows {
        // Classes without a row would only be a model's dead outputs (and their centres,
        // memory drawn for nothing: a billion classes took gigabytes before the model's size
        // was refused).
        return Err(CohortError::InvalidConfig(format!(
            "blobs of {rows} rows hold at most {rows} classes (labels go round-robin), got \
             {classes}"
        )));
    }
    let what = |part: &'static str| move || format!("the {part} of blobs of {rows} × {dims}");
    let mut rng = Rng::new(seed);
    let centres_of = || format!("the centres of {classes} classes × {dims} dimensions of blobs");
    let mut centres: Vec<f32> = host_vec(classes * dims, centres_of)?;
    centres.fill_with(|| 3.0 * rng.normal() as f32);
    let mut labels: Vec<u32> = host_vec(rows, what("labels"))?;
    for (r, label) in labels.iter_mut().enumerate() {
        *label = (r % classes) as u32;
    }
    let mut features: Vec<f32> = host_vec(size, what("features"))?;
    for (point, &label) in features.chunks_exact_mut(dims).zip(&labels) {
        let centre = &centres[label as usize * dims..(label as usize + 1) * dims];
        for (x, &m) in point.iter_mut().zip(centre) {
            *x = m + rng.normal() as f32;
        }
    }
    Dataset::new(features, labels, dims, classes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_seeded_and_shaped() {
        let a = blobs(50, 3, 4, 1).unwrap();
        assert_eq!((a.rows, a.cols, a.classes), (50, 4, 3));
        assert_eq!(a, blobs(50, 3, 4, 1).unwrap());
        assert_ne!(a, blobs(50, 3, 4, 2).unwrap());
        assert_eq!(&a.labels[..4], &[0, 1, 2, 0]);
        // points sit near their class centre: within-class spread is about 1 per dimension
        let b = blobs(3000, 2, 3, 4).unwrap();
        for class in 0..2u32 {
            let rows: Vec<usize> = (0..b.rows).filter(|&r| b.labels[r] == class).collect();
            for c in 0..3 {
                let v: Vec<f64> = rows.iter().map(|&r| b.row(r)[c] as f64).collect();
                let m = v.iter().sum::<f64>() / v.len() as f64;
                let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64;
                assert!((var - 1.0).abs() < 0.15, "class {class} dim {c}: {var}");
            }
        }
        // Sizes in range but beyond the host's memory (4 TiB of labels; 2 GiB on a 32-bit
        // host, past its isize::MAX): an error, not an allocation abort.
        let beyond_memory: usize = if usize::BITS >= 64 { 1 << 40 } else { 1 << 29 };
        assert!(matches!(
            blobs(beyond_memory, 2, 2, 0),
            Err(CohortError::HostMemory { .. })
        ));
        let err = blobs(beyond_memory, beyond_memory, 2, 0).unwrap_err();
        assert!(
            matches!(err, CohortError::HostMemory { .. })
                && err.to_string().contains(&format!(
                    "the centres of {beyond_memory} classes × 2 dimensions"
                )),
            "{err}"
        );
        // Past usize: the message names the count that overflowed.
        for (rows, classes, what) in [(usize::MAX, 2, "rows"), (10, usize::MAX, "classes")] {
            match blobs(rows, classes, 2, 0) {
                Err(e @ CohortError::InvalidConfig(_)) => {
                    let want = format!("blobs of {} {what} × 2 dimensions", rows.max(classes));
                    assert!(e.to_string().contains(&want), "{e}");
                }
                other => panic!("{rows} × {classes}: {:?}", other.map(|d| d.rows)),
            }
        }
        assert!(
            blobs(0, 3, 4, 1).is_err() && blobs(5, 1, 4, 1).is_err() && blobs(5, 3, 0, 1).is_err()
        );
        // More classes than rows: refused at once, whatever the count (a billion classes of
        // 100 rows drew gigabytes of centres first).
        for classes in [4, 1_000_000_000] {
            let err = blobs(3, classes, 1, 0).unwrap_err();
            assert!(
                matches!(err, CohortError::InvalidConfig(_))
                    && err
                        .to_string()
                        .contains("blobs of 3 rows hold at most 3 classes"),
                "{err}"
            );
        }
        assert_eq!(blobs(3, 3, 1, 0).unwrap().labels, [0, 1, 2]);
    }
}
