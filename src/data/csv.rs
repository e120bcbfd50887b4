//! CSV data: numeric feature columns and an integer label column (the last by default), an
//! optional header, and a seeded train/test split. Gzipped files are read too.

use std::path::Path;

use super::{read_maybe_gzip, Dataset, Split};
use crate::error::{CohortError, Result};

/// Whether the first line is a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Header {
    /// A header if any field of the first line is not a number.
    #[default]
    Auto,
    /// The first line is a header.
    Present,
    /// There is no header.
    Absent,
}

/// How to read a CSV file.
#[derive(Clone, Debug, PartialEq)]
pub struct CsvOptions {
    /// The label column (0-based); `None` means the last.
    pub label_column: Option<usize>,
    /// Header handling.
    pub header: Header,
    /// Fraction of rows held out for testing.
    pub test_fraction: f64,
    /// Seed of the split.
    pub seed: u64,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            label_column: None,
            header: Header::Auto,
            test_fraction: 0.2,
            seed: 0,
        }
    }
}

/// Parses CSV text; `origin` names it in errors. Classes are the largest label plus one (a file
/// with a single class is rejected by [`Dataset::new`]).
pub fn parse(text: &str, options: &CsvOptions, origin: &Path) -> Result<Dataset> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let bad =
        |line: usize, why: String| CohortError::corrupt(origin, format!("line {line}: {why}"));
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
        .peekable();
    let skip_header = match (options.header, lines.peek()) {
        (Header::Present, _) => true,
        (Header::Auto, Some((_, first))) => {
            first.split(',').any(|f| f.trim().parse::<f64>().is_err())
        }
        _ => false,
    };
    if skip_header {
        lines.next();
    }
    let (mut features, mut labels, mut width) = (Vec::new(), Vec::new(), None);
    for (n, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        match width {
            None => width = Some(fields.len()),
            Some(w) if w != fields.len() => {
                return Err(bad(n, format!("{} fields, expected {w}", fields.len())))
            }
            _ => {}
        }
        if fields.len() < 2 {
            return Err(bad(n, "need at least one feature and a label".into()));
        }
        let label_at = options.label_column.unwrap_or(fields.len() - 1);
        if label_at >= fields.len() {
            return Err(bad(
                n,
                format!("label column {label_at} but only {} fields", fields.len()),
            ));
        }
        for (i, f) in fields.iter().enumerate() {
            let v: f64 = f
                .parse()
                .map_err(|_| bad(n, format!("'{f}' is not a number")))?;
            if i == label_at {
                if !(v >= 0.0 && v.fract() == 0.0 && v <= u32::MAX as f64) {
                    return Err(bad(n, format!("label '{f}' is not a non-negative integer")));
                }
                labels.push(v as u32);
            } else {
                let x = v as f32;
                if !x.is_finite() {
                    let beyond = if v.is_finite() {
                        " (beyond f32's range)"
                    } else {
                        ""
                    };
                    return Err(CohortError::NonFinite {
                        what: format!(
                            "{} line {n}, field {}: '{f}'{beyond}",
                            origin.display(),
                            i + 1
                        ),
                    });
                }
                features.push(x);
            }
        }
    }
    let cols = width.map_or(0, |w| w - 1);
    if labels.is_empty() {
        return Err(CohortError::EmptyData(format!(
            "{} has no data rows",
            origin.display()
        )));
    }
    let classes = labels.iter().copied().max().unwrap_or(0) as usize + 1;
    Dataset::new(features, labels, cols, classes)
}

/// Loads a CSV file (gzipped or not) and splits it.
pub fn load(path: &Path, options: &CsvOptions) -> Result<Split> {
    let bytes = read_maybe_gzip(path)?;
    let text =
        String::from_utf8(bytes).map_err(|_| CohortError::corrupt(path, "not UTF-8 text"))?;
    parse(&text, options, path)?.split(options.test_fraction, options.seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str, options: &CsvOptions) -> Result<Dataset> {
        parse(text, options, Path::new("t.csv"))
    }

    #[test]
    fn headers_label_columns_and_blank_lines() {
        let d = p("a,b,label\n1,2,0\n\n3,4,2\n", &CsvOptions::default()).unwrap();
        assert_eq!((d.rows, d.cols, d.classes), (2, 2, 3));
        assert_eq!(d.features, vec![1.0, 2.0, 3.0, 4.0]);
        let first = CsvOptions {
            label_column: Some(0),
            header: Header::Absent,
            ..Default::default()
        };
        let d = p("1,5,6\n0.0,7,8\n", &first).unwrap();
        assert_eq!(d.labels, vec![1, 0]);
        assert_eq!(d.features, vec![5.0, 6.0, 7.0, 8.0]);
    }

    #[test]
    fn header_detection_modes() {
        let numeric = "1,2,0\n3,4,1\n";
        assert_eq!(p(numeric, &CsvOptions::default()).unwrap().rows, 2);
        let present = CsvOptions {
            header: Header::Present,
            ..Default::default()
        };
        let d = p(numeric, &present).unwrap();
        assert_eq!((d.rows, d.labels), (1, vec![1]));
        assert_eq!(p("x,y,z\n1,2,0\n3,4,1\n", &present).unwrap().rows, 2);
        let d = p(
            "\u{feff}f1,f2,y\r\n 1 , 2 , 1 \r\n3,4,0\r\n",
            &CsvOptions::default(),
        )
        .unwrap();
        assert_eq!(
            (d.rows, d.features.clone(), d.labels),
            (2, vec![1.0, 2.0, 3.0, 4.0], vec![1, 0])
        );
    }

    #[test]
    fn bad_rows_name_their_line() {
        let o = CsvOptions::default();
        let err = p("1,2,0\n3,1\n", &o).unwrap_err();
        assert!(
            matches!(err, CohortError::CorruptFile { .. }) && err.to_string().contains("line 2"),
            "{err}"
        );
        assert!(p(
            "1,x,0\n1,2,0\n",
            &CsvOptions {
                header: Header::Absent,
                ..o.clone()
            }
        )
        .unwrap_err()
        .to_string()
        .contains("line 1"));
        assert!(p("1,2,1.5\n", &o)
            .unwrap_err()
            .to_string()
            .contains("label"));
        assert!(p("1,2,-1\n", &o).unwrap_err().to_string().contains("label"));
        assert!(matches!(
            p("1,NaN,0\n2,3,1\n", &o),
            Err(CohortError::NonFinite { .. })
        ));
        // Named by file, line and field; a number beyond f32's range is said to be one.
        let err = p("1,2,0\n\n3,1e40,1\n", &o).unwrap_err();
        assert!(
            matches!(&err, CohortError::NonFinite { what }
                if what == "t.csv line 3, field 2: '1e40' (beyond f32's range)"),
            "{err}"
        );
        assert!(p("1,2,0\n\n3,4,x\n", &o)
            .unwrap_err()
            .to_string()
            .contains("line 3"));
        let col9 = CsvOptions {
            label_column: Some(9),
            ..o.clone()
        };
        assert!(matches!(
            p("1,2,0\n", &col9),
            Err(CohortError::CorruptFile { .. })
        ));
        assert!(matches!(
            p("1\n2\n", &o),
            Err(CohortError::CorruptFile { .. })
        ));
        assert!(matches!(
            p("1,2,0\n3,4,0\n", &o),
            Err(CohortError::InvalidConfig(_))
        ));
        assert!(matches!(p("", &o), Err(CohortError::EmptyData(_))));
        assert!(matches!(p("\n  \n", &o), Err(CohortError::EmptyData(_))));
        assert!(matches!(p("a,b,c\n", &o), Err(CohortError::EmptyData(_))));
    }

    #[test]
    fn load_splits_and_reports_missing_files() {
        let dir = std::env::temp_dir().join(format!("cohort-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("d.csv");
        let text: String = (0..10)
            .map(|i| format!("{i},{},{}\n", i * 2, i % 2))
            .collect();
        std::fs::write(&f, text).unwrap();
        let s = load(&f, &CsvOptions::default()).unwrap();
        assert_eq!((s.train.rows, s.test.rows), (8, 2));
        assert_eq!((s.train.cols, s.train.classes), (2, 2));
        let gz = dir.join("d.csv.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &std::fs::read(&f).unwrap()).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        let z = load(&gz, &CsvOptions::default()).unwrap();
        assert_eq!((z.train, z.test), (s.train, s.test));
        let other_seed = CsvOptions {
            seed: 1,
            test_fraction: 0.5,
            ..Default::default()
        };
        let h = load(&f, &other_seed).unwrap();
        assert_eq!((h.train.rows, h.test.rows), (5, 5));
        assert!(matches!(
            load(&dir.join("nope.csv"), &CsvOptions::default()),
            Err(CohortError::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
