//! The embedded default data set: the UCI "Optical Recognition of Handwritten Digits" test set
//! (E. Alpaydin, C. Kaynak, 1998; CC BY 4.0, as shipped inside scikit-learn): 1,797 digits of 8×8
//! pixels valued 0..16. See `data/README.md`.

use super::csv::{parse, CsvOptions, Header};
use super::Split;
use crate::error::Result;

const DIGITS_CSV_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");

/// The digits, pixels scaled to [0, 1], split 80/20 with a fixed seed.
pub fn load() -> Result<Split> {
    use std::io::Read;
    let origin = std::path::Path::new("<embedded digits.csv.gz>");
    let mut text = String::new();
    flate2::read::GzDecoder::new(DIGITS_CSV_GZ)
        .read_to_string(&mut text)
        .map_err(|e| crate::CohortError::corrupt(origin, e.to_string()))?;
    let options = CsvOptions {
        header: Header::Absent,
        ..Default::default()
    };
    let (mut data, _) = parse(&text, &options, origin)?;
    data.features.iter_mut().for_each(|v| *v /= 16.0);
    data.split(0.2, 0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedded_digits_load() {
        let s = super::load().unwrap();
        assert_eq!(s.train.rows + s.test.rows, 1797);
        assert_eq!((s.train.cols, s.train.classes), (64, 10));
        assert_eq!((s.train.rows, s.test.rows), (1438, 359));
        assert_eq!((s.test.cols, s.test.classes), (64, 10));
        for part in [&s.train, &s.test] {
            assert!(part.features.iter().all(|&v| (0.0..=1.0).contains(&v)));
        }
        assert!(s.train.features.contains(&1.0));
        let mut seen = [false; 10];
        s.train.labels.iter().for_each(|&l| seen[l as usize] = true);
        assert!(seen.iter().all(|&b| b), "every digit appears in training");
        assert_eq!(super::load().unwrap().test, s.test, "the split is fixed");
    }
}
