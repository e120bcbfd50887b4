//! CSV data: numeric feature columns and an integer label column (named in a header, or the
//! last), an optional header, and a seeded train/test split. Gzipped files are read too.

use std::path::Path;

use super::{read_maybe_gzip, Dataset, Split};
use crate::error::{CohortError, Result};

/// Whether the first line is a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Header {
    /// A header if the first line's label field is not a number (a line with a bad feature
    /// value is reported as a bad row, with a hint to say there is a header).
    #[default]
    Auto,
    /// The first line is a header.
    Present,
    /// There is no header.
    Absent,
}

/// Which column holds the labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LabelColumn {
    /// The header's column named `label`, `target`, `class` or `y` (in any case) where there
    /// is exactly one, else the last.
    #[default]
    Auto,
    /// The last column.
    Last,
    /// The column at this index, from 0.
    Index(usize),
}

/// How to read a CSV file.
#[derive(Clone, Debug, PartialEq)]
pub struct CsvOptions {
    /// The label column.
    pub label_column: LabelColumn,
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
            label_column: LabelColumn::Auto,
            header: Header::Auto,
            test_fraction: 0.2,
            seed: 0,
        }
    }
}

/// Header names taken for the label column when none is given.
const LABEL_NAMES: [&str; 4] = ["label", "target", "class", "y"];

/// The label column of a file whose first line is `first` (a header or not), and whether that
/// line is a header.
fn label_and_header(first: &[&str], options: &CsvOptions) -> (usize, bool) {
    let is_number = |f: &str| f.parse::<f64>().is_ok();
    let named = || {
        let mut named = first
            .iter()
            .enumerate()
            .filter(|(_, f)| LABEL_NAMES.iter().any(|n| f.eq_ignore_ascii_case(n)));
        match (named.next(), named.next()) {
            (Some((i, _)), None) => Some(i),
            _ => None,
        }
    };
    let last = first.len().saturating_sub(1);
    let given = match options.label_column {
        LabelColumn::Auto => None,
        LabelColumn::Last => Some(last),
        LabelColumn::Index(i) => Some(i),
    };
    let header = match (options.header, given) {
        (Header::Present, _) => true,
        (Header::Absent, _) => false,
        (Header::Auto, Some(i)) => first.get(i).is_some_and(|f| !is_number(f)),
        (Header::Auto, None) => named().is_some() || first.last().is_some_and(|f| !is_number(f)),
    };
    let label = match given {
        Some(i) => i,
        None if header => named().unwrap_or(last),
        None => last,
    };
    (label, header)
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
    let (first_n, first): (usize, Vec<&str>) = match lines.peek() {
        Some(&(n, line)) => (n, line.split(',').map(str::trim).collect()),
        None => (0, Vec::new()),
    };
    let (label_at, header) = label_and_header(&first, options);
    if header {
        lines.next();
    }
    // A bad value on the first line read as data may be a header the guess missed.
    let hint = |n: usize| match options.header {
        Header::Auto if n == first_n => " (if the first line is a header, say so: --header yes)",
        _ => "",
    };
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
        if label_at >= fields.len() {
            return Err(bad(
                n,
                format!("label column {label_at} but only {} fields", fields.len()),
            ));
        }
        for (i, f) in fields.iter().enumerate() {
            let v: f64 = f.parse().map_err(|_| match i == label_at {
                true => bad(
                    n,
                    format!(
                        "label '{f}' is not a number: classes are numbered from 0 (number named \
                         classes first)"
                    ),
                ),
                false => bad(n, format!("'{f}' is not a number{}", hint(n))),
            })?;
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
            label_column: LabelColumn::Index(0),
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
    fn the_header_names_the_label_column() {
        let o = CsvOptions::default();
        let d = p("Label,a,b\n3,1,2\n4,5,6\n", &o).unwrap();
        assert_eq!(
            (d.labels, d.features),
            (vec![3, 4], vec![1.0, 2.0, 5.0, 6.0])
        );
        let d = p("a,target,b\n1,1,2\n5,0,6\n", &o).unwrap();
        assert_eq!(
            (d.labels, d.features),
            (vec![1, 0], vec![1.0, 2.0, 5.0, 6.0])
        );
        // Columns named by number, the label last.
        let d = p("0,1,y\n1,2,1\n3,4,0\n", &o).unwrap();
        assert_eq!((d.rows, d.labels), (2, vec![1, 0]));
        // Two label-like names: the last column, as without a header.
        let d = p("label,y,c\n1,2,1\n3,4,0\n", &o).unwrap();
        assert_eq!(
            (d.labels, d.features),
            (vec![1, 0], vec![1.0, 2.0, 3.0, 4.0])
        );
        // A column given is the label whatever the header says; the header is guessed from it.
        let first = CsvOptions {
            label_column: LabelColumn::Index(0),
            ..o.clone()
        };
        let d = p("class,label\n1,7\n0,8\n", &first).unwrap();
        assert_eq!((d.labels, d.features), (vec![1, 0], vec![7.0, 8.0]));
        let last = CsvOptions {
            label_column: LabelColumn::Last,
            ..o.clone()
        };
        let d = p("label,a,b\n1,2,0\n3,4,1\n", &last).unwrap();
        assert_eq!(
            (d.labels, d.features),
            (vec![0, 1], vec![1.0, 2.0, 3.0, 4.0])
        );
        let err = p("1,x\n0,8\n", &first).unwrap_err().to_string();
        assert!(
            err.contains("line 1: 'x' is not a number (if the first line is a header"),
            "{err}"
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
        // A first row with a bad feature is a bad row (it was once taken for a header), said
        // with a hint; on later lines, without.
        let err = p("1,x,0\n1,2,0\n", &o).unwrap_err().to_string();
        assert!(
            err.ends_with(
                "line 1: 'x' is not a number (if the first line is a header, say so: --header yes)"
            ),
            "{err}"
        );
        let err = p("1,2,0\n1,x,0\n", &o).unwrap_err().to_string();
        assert!(err.ends_with("line 2: 'x' is not a number"), "{err}");
        let err = p("a,b,species\n1,2,setosa\n", &o).unwrap_err().to_string();
        assert!(err.ends_with("line 2: label 'setosa' is not a number: classes are numbered from 0 (number named classes first)"), "{err}");
        assert!(p("1,2,0\n\n3,4,x\n", &o)
            .unwrap_err()
            .to_string()
            .contains("line 3"));
        let col9 = CsvOptions {
            label_column: LabelColumn::Index(9),
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
