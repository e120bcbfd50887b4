//! CSV data: numeric feature columns and an integer label column (named in a header, or the
//! last), an optional header, and a seeded train/test split; or, for rows to predict, feature
//! columns only. Blank lines and lines that begin with `#` are skipped. Gzipped files are read
//! too.

use std::path::Path;

use super::{gathered_rows, read_checking, Dataset, Split, SplitRows};
use crate::error::{CohortError, Result};

/// Whether the first line is a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Header {
    /// A header if the first line names a column as [`LabelColumn::Auto`] looks for (with no
    /// label column given), if its label field and another are not numbers, or if it numbers
    /// the columns as pandas writes them (`0,1,2,…` from 0 or 1, gaps allowed, at least five);
    /// a first line with bad values is otherwise a bad row, reported with a hint to say there
    /// is a header.
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
    /// The header's column named `label`, `labels`, `target` or `class` (in any case) where
    /// exactly one has such a name, else the last.
    #[default]
    Auto,
    /// The last column.
    Last,
    /// The column at this index, from 0.
    Index(usize),
    /// No label column: every field is a feature (rows to predict, not to train on).
    None,
}

/// How a CSV file was read: which column held the labels and whether it had a header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvLayout {
    /// Columns in each row.
    pub columns: usize,
    /// The label column, from 0 (none in a file of features only).
    pub label_column: Option<usize>,
    /// The header's names (empty without a header).
    pub names: Vec<String>,
}

impl CsvLayout {
    /// The label column as a reader would name it: `column 0 ('label')`, `column 4 (the last)`,
    /// `no column (features only)`.
    pub fn describe_label(&self) -> String {
        let Some(column) = self.label_column else {
            return "no column (features only)".into();
        };
        let name = self.names.get(column).filter(|name| !name.is_empty());
        match (name, column + 1 == self.columns) {
            (Some(name), _) => format!("column {column} ('{name}')"),
            (None, true) => format!("column {column} (the last)"),
            (None, false) => format!("column {column}"),
        }
    }

    /// The header's columns read as features though named as labels are (`label`, `labels`,
    /// `target`, `class`, any case): a second such name beside the label column, or one in
    /// rows taken as features only.
    pub fn features_named_as_labels(&self) -> Vec<usize> {
        (0..self.names.len())
            .filter(|&i| Some(i) != self.label_column)
            .filter(|&i| {
                LABEL_NAMES
                    .iter()
                    .any(|n| self.names[i].eq_ignore_ascii_case(n))
            })
            .collect()
    }

    /// The header's columns without a name (as pandas writes its index), read as features.
    pub fn unnamed_features(&self) -> Vec<usize> {
        (0..self.names.len())
            .filter(|&i| Some(i) != self.label_column && self.names[i].is_empty())
            .collect()
    }
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
    /// At least this many classes (a trained model's, so that a file to score may hold fewer
    /// than 2); by default the classes are the largest label + 1, which must be at least 2.
    pub min_classes: Option<usize>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            label_column: LabelColumn::Auto,
            header: Header::Auto,
            test_fraction: 0.2,
            seed: 0,
            min_classes: None,
        }
    }
}

/// Header names taken for the label column when none is given (not `y`, which is as often a
/// coordinate).
const LABEL_NAMES: [&str; 4] = ["label", "labels", "target", "class"];

/// The label column of a file whose first line is `first` (a header or not), and whether that
/// line is a header.
fn label_and_header(first: &[&str], options: &CsvOptions) -> (Option<usize>, bool) {
    let is_number = |f: &str| f.parse::<f64>().is_ok();
    let numbered = numbers_columns(first);
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
        // Without a label, a header is a line of names only: a line mixing names and numbers
        // is a data row with bad values (its error hints at --header yes).
        LabelColumn::None => {
            let header = match options.header {
                Header::Present => true,
                Header::Absent => false,
                Header::Auto => {
                    numbered
                        || first.iter().any(|f| !f.is_empty())
                            && !first.iter().any(|f| is_number(f))
                }
            };
            return (None, header);
        }
    };
    // A header names its columns: a line whose label field is the only one that is not a
    // number is a data row with a bad label; an empty field names nothing.
    let label_guess = given.unwrap_or(last);
    let names = |i: usize| first.get(i).is_some_and(|f| !f.is_empty() && !is_number(f));
    let header = match options.header {
        Header::Present => true,
        Header::Absent => false,
        Header::Auto => {
            numbered
                || named().is_some_and(|i| given.is_none_or(|g| g == i))
                || (names(label_guess) && (0..first.len()).any(|i| i != label_guess && names(i)))
        }
    };
    let label = match given {
        Some(i) => i,
        None if header => named().unwrap_or(last),
        None => last,
    };
    (Some(label), header)
}

/// Whether `fields` number the columns: whole numbers written plainly (digits, no leading
/// zero), rising, the first 0 or 1 (`0,1,2,…`, or with gaps where columns were dropped:
/// `0,1,4,7,…`), at least five of them, after an empty field where pandas names its index
/// column so. That is the header pandas writes for a frame whose columns have no names; a data
/// row so regular is unlikely.
fn numbers_columns(fields: &[&str]) -> bool {
    let numbers = match fields.first() {
        Some(&"") => &fields[1..],
        _ => fields,
    };
    // Written plainly: the number reads back as the field (no sign, leading zero or decimals).
    let Some(values) = numbers
        .iter()
        .map(|f| f.parse::<u64>().ok().filter(|v| v.to_string() == *f))
        .collect::<Option<Vec<u64>>>()
    else {
        return false;
    };
    values.len() >= 5 && values[0] <= 1 && values.windows(2).all(|w| w[0] < w[1])
}

/// Whether a trimmed line is a header or a row: not blank, and not a comment (`#`, as NumPy's
/// `savetxt` writes its header and R and many tools their notes).
fn holds_data(line: &str) -> bool {
    !line.is_empty() && !line.starts_with('#')
}

/// The comment line directly before the first row, as its line number and fields, where it is
/// as wide as that row and the row is all numbers: NumPy's `savetxt` writes its header so
/// (`# a,b,label`).
fn commented_header(text: &str) -> Option<(usize, Vec<&str>)> {
    let mut comment = None;
    let lines = lines_of(text).enumerate().map(|(i, l)| (i + 1, l.trim()));
    for (n, line) in lines.filter(|(_, l)| !l.is_empty()) {
        match line.strip_prefix('#') {
            Some(text) => comment = Some((n, fields_of(text))),
            None => {
                let row = fields_of(line);
                let numbers = row.iter().all(|f| f.parse::<f64>().is_ok());
                return comment.filter(|(_, names)| numbers && names.len() == row.len());
            }
        }
    }
    None
}

/// The fields of a CSV line, trimmed, each without one pair of surrounding double quotes (as
/// spreadsheets and R write them). Fields holding commas are not supported: data files hold
/// numbers.
fn fields_of(line: &str) -> Vec<&str> {
    fn unquote(f: &str) -> &str {
        let f = f.trim();
        match f.strip_prefix('"').and_then(|f| f.strip_suffix('"')) {
            Some(inner) => inner.trim(),
            None => f,
        }
    }
    line.split(',').map(unquote).collect()
}

/// The lines of `text`, ended by `\n`, `\r\n` or (old Mac files) a lone `\r`, mixed as they
/// may be.
fn lines_of(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n')
        .flat_map(|l| l.strip_suffix('\r').unwrap_or(l).split('\r'))
}

/// How many lines `bytes` end, as [`lines_of`] counts them.
fn line_ends(bytes: &[u8]) -> usize {
    let lone_cr = bytes
        .windows(2)
        .filter(|w| w[0] == b'\r' && w[1] != b'\n')
        .count()
        + usize::from(bytes.last() == Some(&b'\r'));
    bytes.iter().filter(|&&b| b == b'\n').count() + lone_cr
}

/// A CSV file's rows as read: features, and labels unless the file has none.
#[derive(Clone, Debug, PartialEq)]
pub struct Rows {
    /// `rows × cols` features.
    pub features: Vec<f32>,
    /// One label per row, or none ([`LabelColumn::None`]).
    pub labels: Option<Vec<u32>>,
    /// Number of rows (at least one).
    pub rows: usize,
    /// Features per row (at least one).
    pub cols: usize,
}

impl Rows {
    /// [`Dataset::fingerprint`] of these rows as a data set of `classes` classes (without the
    /// copy one would take); none where they have no labels.
    pub fn fingerprint(&self, classes: usize) -> Option<u64> {
        let labels = self.labels.as_ref()?;
        Some(super::fingerprint(
            &self.features,
            labels,
            self.rows,
            self.cols,
            classes,
        ))
    }

    /// The training part of labelled rows as [`Dataset::split`] takes it with `options`' test
    /// fraction and seed, with `classes` classes; none where the rows have no labels or do not
    /// split; [`CohortError::HostMemory`] where the host cannot hold the copy.
    pub fn training_part(&self, options: &CsvOptions, classes: usize) -> Result<Option<Dataset>> {
        let Some(labels) = &self.labels else {
            return Ok(None);
        };
        let Some(parts) =
            SplitRows::where_they_split(self.rows, options.test_fraction, options.seed)?
        else {
            return Ok(None);
        };
        let (features, labels) = gathered_rows(&self.features, labels, self.cols, parts.train())?;
        Ok(Dataset::new(features, labels, self.cols, classes).ok())
    }
}

/// Parses CSV text into a training data set; `origin` names it in errors. Classes are the
/// largest label plus one (a file with a single class is rejected by [`Dataset::new`]). Lines
/// end in `\n`, `\r\n` or a lone `\r`.
pub fn parse(text: &str, options: &CsvOptions, origin: &Path) -> Result<(Dataset, CsvLayout)> {
    let (rows, layout) = parse_rows(text, options, origin)?;
    let Some(labels) = rows.labels else {
        return Err(CohortError::InvalidConfig(format!(
            "{} was read without a label column: training and scoring need labels",
            origin.display()
        )));
    };
    let largest = labels.iter().copied().max().unwrap_or(0) as usize;
    let classes = (largest + 1).max(options.min_classes.unwrap_or(0));
    let data = Dataset::new(rows.features, labels, rows.cols, classes).map_err(|e| match e {
        // One class: most likely the wrong column (a label-first file read without a header).
        CohortError::InvalidConfig(why) if options.min_classes.is_none() => {
            CohortError::InvalidConfig(format!(
                "{why}: the labels in {} were read from {}; --label-column chooses another",
                origin.display(),
                layout.describe_label()
            ))
        }
        other => other,
    })?;
    Ok((data, layout))
}

/// Parses CSV text into rows, labelled or not as `options` say; `origin` names it in errors.
pub fn parse_rows(text: &str, options: &CsvOptions, origin: &Path) -> Result<(Rows, CsvLayout)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let bad =
        |line: usize, why: String| CohortError::corrupt(origin, format!("line {line}: {why}"));
    let mut lines = lines_of(text)
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| holds_data(l))
        .peekable();
    let (mut first_n, mut first): (usize, Vec<&str>) = match lines.peek() {
        Some(&(n, line)) => (n, fields_of(line)),
        None => (0, Vec::new()),
    };
    let (mut label_at, mut header) = label_and_header(&first, options);
    // Rows must have the header's width, or the first row's: (fields, line).
    let mut width = None;
    // NumPy's header: a comment before a first row of numbers as wide. With --header yes it
    // is the header (that row is data); in auto mode, where the first line is no header and
    // the comment reads as one would.
    let numpy = match (options.header, header) {
        (Header::Present, _) | (Header::Auto, false) => commented_header(text),
        _ => None,
    }
    .map(|(n, names)| (n, label_and_header(&names, options), names))
    .filter(|(_, (_, is_header), _)| *is_header);
    if let Some((n, (label, _), names)) = numpy {
        (first_n, first, label_at, header) = (n, names, label, true);
        width = Some((first.len(), first_n));
    } else if header {
        lines.next();
        width = Some((first.len(), first_n));
    }
    // A bad value on the first line may be a header the guess missed, or one --header no
    // turned into data.
    let hint = |n: usize| match options.header {
        _ if n != first_n => "",
        Header::Auto => " (if the first line is a header, say so: --header yes)",
        Header::Absent => " (--header no reads the first line as data)",
        Header::Present => "",
    };
    let (mut features, mut labels, mut rows) = (Vec::new(), Vec::new(), 0);
    for (n, line) in lines {
        rows += 1;
        let fields = fields_of(line);
        match width {
            None => width = Some((fields.len(), n)),
            Some((w, at)) if w != fields.len() => {
                return Err(bad(
                    n,
                    format!("{} fields, line {at} has {w}", fields.len()),
                ))
            }
            _ => {}
        }
        if fields.len() < 1 + usize::from(label_at.is_some()) {
            let separator = [(';', "semicolons"), ('\t', "tabs")]
                .into_iter()
                .find(|&(c, _)| line.contains(c))
                .map(|(_, name)| format!(" (fields are separated by commas; this line has {name})"))
                .unwrap_or_default();
            let need = match label_at {
                Some(_) => "at least one feature and a label",
                None => "at least one feature",
            };
            return Err(bad(n, format!("need {need}{separator}")));
        }
        if let Some(label_at) = label_at.filter(|&l| l >= fields.len()) {
            return Err(bad(
                n,
                format!(
                    "{} fields (columns 0 to {}), no label column {label_at}",
                    fields.len(),
                    fields.len() - 1
                ),
            ));
        }
        for (i, f) in fields.iter().enumerate() {
            let is_label = Some(i) == label_at;
            let v: f64 = f.parse().map_err(|_| {
                let why = match (f.is_empty(), is_label) {
                    // A comma at the end of every line makes an empty last column.
                    (true, true) if i + 1 == fields.len() && line.trim_end().ends_with(',') => {
                        "the label is missing: the line ends in a comma, so its last field \
                         (the label column) is empty"
                            .to_string()
                    }
                    (true, true) => "the label is missing".to_string(),
                    (true, false) => format!("column {i} is empty"),
                    (false, true) => format!(
                        "label '{f}' is not a number: classes are numbered from 0 (number named \
                         classes first)"
                    ),
                    (false, false) => format!("'{f}' is not a number"),
                };
                bad(n, format!("{why}{}", hint(n)))
            })?;
            if is_label {
                if !(v >= 0.0 && v.fract() == 0.0 && v <= u32::MAX as f64) {
                    // A fraction or a negative number: most likely a feature, in a file whose
                    // labels are elsewhere or missing (features only).
                    let elsewhere = match v.fract() != 0.0 || v < 0.0 {
                        true => format!(
                            " (column {i} read as the labels: --label-column names the column \
                             that holds them)"
                        ),
                        false => String::new(),
                    };
                    return Err(bad(
                        n,
                        format!(
                            "label '{f}' is not an integer from 0 to {}{elsewhere}",
                            u32::MAX
                        ),
                    ));
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
                        what: format!("{} line {n}, column {i}: '{f}'{beyond}", origin.display()),
                    });
                }
                features.push(x);
            }
        }
    }
    let cols = width.map_or(0, |(w, _)| w - usize::from(label_at.is_some()));
    if rows == 0 {
        return Err(CohortError::EmptyData(format!(
            "{} has no data rows",
            origin.display()
        )));
    }
    let layout = CsvLayout {
        columns: cols + usize::from(label_at.is_some()),
        label_column: label_at,
        names: match header {
            true => first.iter().map(|f| f.to_string()).collect(),
            false => Vec::new(),
        },
    };
    let labels = label_at.map(|_| labels);
    let rows = Rows {
        features,
        labels,
        rows,
        cols,
    };
    Ok((rows, layout))
}

/// Reads a CSV file (gzipped or not) whole, unsplit.
pub fn read(path: impl AsRef<Path>, options: &CsvOptions) -> Result<(Dataset, CsvLayout)> {
    let path = path.as_ref();
    parse(&read_text(path)?, options, path)
}

/// Reads a CSV file (gzipped or not) whole as rows to predict. With [`LabelColumn::Auto`] and
/// `features` given (a model's inputs), a file whose lines have that many fields or fewer has
/// no label column (too few fields then is the caller's error to report, naming both widths).
pub fn read_rows(
    path: impl AsRef<Path>,
    options: &CsvOptions,
    features: Option<usize>,
) -> Result<(Rows, CsvLayout)> {
    let path = path.as_ref();
    let text = read_text(path)?;
    let mut options = options.clone();
    let first_width = lines_of(text.strip_prefix('\u{feff}').unwrap_or(&text))
        .map(str::trim)
        .find(|l| holds_data(l))
        .map(|l| fields_of(l).len());
    let no_room_for_labels = matches!((first_width, features), (Some(w), Some(f)) if w <= f);
    if options.label_column == LabelColumn::Auto && no_room_for_labels {
        options.label_column = LabelColumn::None;
    }
    parse_rows(&text, &options, path)
}

/// A file's text (gunzipped where it is gzipped), which must be UTF-8 without NUL bytes: a
/// file that is not (binary data, UTF-16) is refused at the first mebibyte that shows it,
/// naming the line.
fn read_text(path: &Path) -> Result<String> {
    // The bytes known to be whole UTF-8 characters without NULs.
    let mut whole = 0;
    let bytes = read_checking(path, |bytes, finished| {
        let (end, bad) = match std::str::from_utf8(&bytes[whole..]) {
            Ok(_) => (bytes.len(), false),
            // A character cut at the end of what is read so far: whole once the rest comes.
            Err(e) if e.error_len().is_none() && !finished => (whole + e.valid_up_to(), false),
            Err(e) => (whole + e.valid_up_to(), true),
        };
        let nul = bytes[whole..end].iter().position(|&b| b == 0);
        match (nul, bad) {
            (Some(at), _) => Err(not_text(
                path,
                &bytes[..whole + at],
                " (a NUL byte: UTF-16?)",
            )),
            (None, true) => Err(not_text(path, &bytes[..end], "")),
            (None, false) => {
                whole = end;
                Ok(())
            }
        }
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        not_text(path, &e.as_bytes()[..at], "")
    })
}

/// A file refused as not UTF-8 text at the line after `before`, `why` said.
fn not_text(path: &Path, before: &[u8], why: &str) -> CohortError {
    let line = line_ends(before) + 1;
    CohortError::corrupt(
        path,
        format!("line {line}: not UTF-8 text{why} (save it as UTF-8)"),
    )
}

/// Loads a CSV file (gzipped or not) and splits it as `options` say.
pub fn load(path: impl AsRef<Path>, options: &CsvOptions) -> Result<(Split, CsvLayout)> {
    let path = path.as_ref();
    let (data, layout) = read(path, options)?;
    Ok((data.split(options.test_fraction, options.seed)?, layout))
}

/// Loads a training file and a test file read alike: both must put their labels in the same
/// column (and name their columns alike, where they have headers); classes are counted over
/// both (so the test file may hold a single class).
pub fn load_pair(
    train: impl AsRef<Path>,
    test: impl AsRef<Path>,
    options: &CsvOptions,
) -> Result<(Split, CsvLayout)> {
    let train = train.as_ref();
    let test = test.as_ref();
    let (mut train_data, layout) = read(train, options)?;
    let test_options = CsvOptions {
        min_classes: Some(train_data.classes),
        ..options.clone()
    };
    let (mut test_data, test_layout) = read(test, &test_options)?;
    let differ = |what: String| {
        CohortError::corrupt(test, format!("{what} (the training file's are read alike)"))
    };
    // Other widths first: the label column found at the end of each says less.
    if test_layout.columns != layout.columns {
        return Err(CohortError::corrupt(
            test,
            format!(
                "its rows have {} columns, the training file's {}",
                test_layout.columns, layout.columns
            ),
        ));
    }
    if test_layout.label_column != layout.label_column {
        return Err(differ(format!(
            "its labels are in {}, the training file's in {}",
            test_layout.describe_label(),
            layout.describe_label()
        )));
    }
    // A header guessed in the test file alone would lose a row the training file's reading
    // keeps as data (the other way round, a test file without the header, loses nothing).
    if layout.names.is_empty() && !test_layout.names.is_empty() {
        return Err(CohortError::corrupt(
            test,
            format!(
                "its first line ({}) was taken for a header, and the training file has none; \
                 --header yes or no says how both files are read",
                test_layout.names.join(",")
            ),
        ));
    }
    if !test_layout.names.is_empty()
        && !layout.names.is_empty()
        && test_layout.names != layout.names
    {
        return Err(differ("its header names other columns".into()));
    }
    let classes = train_data.classes.max(test_data.classes);
    train_data.classes = classes;
    test_data.classes = classes;
    Ok((
        Split {
            train: train_data,
            test: test_data,
        },
        layout,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str, options: &CsvOptions) -> Result<Dataset> {
        parse(text, options, Path::new("t.csv")).map(|(data, _)| data)
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
        // Every name of LABEL_NAMES, in any case.
        for header in ["Labels,a,b", "a,CLASS,b", "a,b,label"] {
            let (d, layout) =
                parse(&format!("{header}\n1,1,0\n0,5,6\n"), &o, Path::new("t")).unwrap();
            let at = header.split(',').position(|f| f.len() > 1).unwrap();
            assert_eq!(
                layout.describe_label(),
                format!("column {at} ('{}')", &header.split(',').nth(at).unwrap()),
                "{header}"
            );
            assert_eq!(d.rows, 2, "{header}");
        }
        // Columns named by number, the label last; quoted names (R's write.csv).
        let d = p("0,1,target\n1,2,1\n3,4,0\n", &o).unwrap();
        assert_eq!((d.rows, d.labels), (2, vec![1, 0]));
        let d = p("\"label\",\"a\",\"b\"\n\"1\",2,\"3\"\n0,5,6\n", &o).unwrap();
        assert_eq!(
            (d.labels, d.features),
            (vec![1, 0], vec![2.0, 3.0, 5.0, 6.0])
        );
        // Two label-like names: the last column, as without a header; `y` is not one (a
        // coordinate as often as a label).
        for header in ["label,target,c", "x,y,c"] {
            let (d, layout) =
                parse(&format!("{header}\n1,2,1\n3,4,0\n"), &o, Path::new("t")).unwrap();
            assert_eq!(
                (d.labels, d.features),
                (vec![1, 0], vec![1.0, 2.0, 3.0, 4.0])
            );
            assert_eq!(layout.describe_label(), "column 2 ('c')");
        }
        // A header must be as wide as the rows (a short one put the label on a feature).
        let err = p("f0,f1,label\n1,2,3,0\n", &o).unwrap_err().to_string();
        assert!(err.ends_with("line 2: 4 fields, line 1 has 3"), "{err}");
        // An unnamed first column (pandas' index) is a feature, and the layout says so.
        let (_, layout) = parse(",a,label\n0,2,1\n1,4,0\n", &o, Path::new("t")).unwrap();
        assert_eq!(layout.unnamed_features(), vec![0]);
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
        // A first line whose only bad field is its label is a bad row, not a header.
        for (text, why) in [
            ("1,2,?\n3,4,1\n", "label '?' is not a number"),
            ("1,2,\n3,4,1\n", "the label is missing"),
            (
                "1,2,0,\n3,4,1,\n",
                "the label is missing: the line ends in a comma",
            ),
        ] {
            let err = p(text, &o).unwrap_err().to_string();
            assert!(
                err.contains(&format!("line 1: {why}")) && err.ends_with("--header yes)"),
                "{err}"
            );
        }
        // Said to be no header, a header is data, and the error says so.
        let no = CsvOptions {
            header: Header::Absent,
            ..first
        };
        let err = p("label,a\n1,7\n", &no).unwrap_err().to_string();
        assert!(
            err.ends_with("(--header no reads the first line as data)"),
            "{err}"
        );
        // Old Mac line ends, alone or mixed with others (as `echo >> f` leaves them).
        assert_eq!(p("a,label\r1,0\r2,1\r", &o).unwrap().labels, vec![0, 1]);
        let d = p("a,label\r1,0\r\n2,1\r3,1\n4,0", &o).unwrap();
        assert_eq!(d.labels, vec![0, 1, 1, 0]);
        let err = p("a,label\r1,0\r\n2,x\n", &o).unwrap_err().to_string();
        assert!(err.contains("line 3: label 'x'"), "{err}");
        assert_eq!(line_ends(b"a\rb\r\nc\nd\r"), 4);
        // A label column given by number is still a header's named one.
        let d = p("0,1,label\n5,6,1\n7,8,0\n", &last).unwrap();
        assert_eq!(d.labels, vec![1, 0]);
        // An empty field names nothing: a first row with gaps is a bad row, not a header.
        let err = p("1,,\n3,4,1\n", &o).unwrap_err().to_string();
        assert!(err.contains("line 1: column 1 is empty"), "{err}");
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
        let err = p("1,,0\n3,4,1\n", &o).unwrap_err().to_string();
        assert!(err.contains("line 1: column 1 is empty"), "{err}");
        let err = p("1;2;0\n", &o).unwrap_err().to_string();
        assert!(
            err.ends_with("(fields are separated by commas; this line has semicolons)"),
            "{err}"
        );
        // A feature read as a label (a file of features only): the column is named.
        let err = p("1,2,-0.5\n", &o).unwrap_err().to_string();
        let want = "label '-0.5' is not an integer from 0 to 4294967295 (column 2 read as the \
                    labels: --label-column names the column that holds them)";
        assert!(err.ends_with(want), "{err}");
        let err = p("1,2,4294967296\n", &o).unwrap_err().to_string();
        assert!(
            err.ends_with("label '4294967296' is not an integer from 0 to 4294967295"),
            "{err}"
        );
        let err = p(
            "1,2,0\n",
            &CsvOptions {
                label_column: LabelColumn::Index(3),
                ..o.clone()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.ends_with("3 fields (columns 0 to 2), no label column 3"),
            "{err}"
        );
        // One class: most likely the wrong column, and the error names the one read.
        let err = p("1,2,0\n3,4,0\n", &o).unwrap_err().to_string();
        assert!(
            err.ends_with("were read from column 2 (the last); --label-column chooses another"),
            "{err}"
        );
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
                if what == "t.csv line 3, column 1: '1e40' (beyond f32's range)"),
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
    fn comment_lines_are_skipped() {
        // NumPy's savetxt with a header: the comment just before the first row, as wide as
        // it, is the header where it reads as one; other comments are skipped.
        let o = CsvOptions::default();
        let (d, layout) = parse(
            "# data v2\n# label,a,b\n1,2,0\n  # a note\n3,4,1\n",
            &o,
            Path::new("t.csv"),
        )
        .unwrap();
        assert_eq!((d.rows, d.labels), (2, vec![1, 3]));
        assert_eq!(layout.describe_label(), "column 0 ('label')");
        for (text, label) in [
            ("# a,label\n1,2,0\n3,4,1\n", vec![0, 1]), // not as wide: a note
            ("# 1,2,3\n1,2,0\n3,4,1\n", vec![0, 1]),   // numbers: not a header
            ("# label,a,b\n\n1,2,0\n3,4,1\n", vec![1, 3]),
        ] {
            assert_eq!(p(text, &o).unwrap().labels, label, "{text}");
        }
        let absent = CsvOptions {
            header: Header::Absent,
            ..o.clone()
        };
        assert_eq!(
            p("# label,a,b\n1,2,0\n3,4,1\n", &absent).unwrap().labels,
            vec![0, 1]
        );
        // With --header yes it is the header too: the first row stays data.
        let present = CsvOptions {
            header: Header::Present,
            ..o.clone()
        };
        let (d, layout) =
            parse("# label,a,b\n1,2,0\n3,4,1\n", &present, Path::new("t.csv")).unwrap();
        assert_eq!((d.rows, d.labels), (2, vec![1, 3]));
        assert_eq!(layout.describe_label(), "column 0 ('label')");
        // A header after comments is still the first line that holds data.
        let d = p("#!notes\nlabel,a\n1,2\n0,4\n", &CsvOptions::default()).unwrap();
        assert_eq!((d.labels, d.features), (vec![1, 0], vec![2.0, 4.0]));
        // Lines are still counted in errors.
        let err = p("# c\n1,2,0\n3,x,1\n", &CsvOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3: 'x' is not a number"), "{err}");
    }

    #[test]
    fn headers_that_number_the_columns() {
        let o = CsvOptions::default();
        // pandas' to_csv of a frame with integer column names, with and without its index.
        let d = p("0,1,2,3,4,5\n1,2,3,4,5,1\n6,7,8,9,10,0\n", &o).unwrap();
        assert_eq!((d.rows, d.labels), (2, vec![1, 0]));
        let (d, layout) = parse(
            ",0,1,2,3,4\n0,2,3,4,5,1\n1,7,8,9,10,0\n",
            &o,
            Path::new("t.csv"),
        )
        .unwrap();
        assert_eq!((d.rows, d.cols, layout.unnamed_features()), (2, 5, vec![0]));
        let none = CsvOptions {
            label_column: LabelColumn::None,
            ..o.clone()
        };
        let (r, _) = parse_rows("1,2,3,4,5\n1,2,3,4,5\n", &none, Path::new("t")).unwrap();
        assert_eq!(r.rows, 1);
        // With gaps where columns were dropped (`df.drop(columns=[2, 3]).to_csv()`).
        let d = p("0,1,4,5,7,9\n1,2,3,4,5,1\n6,7,8,9,10,0\n", &o).unwrap();
        assert_eq!((d.rows, d.labels), (2, vec![1, 0]));
        let d = p(",1,2,5,6,8\n0,2,3,4,5,1\n1,7,8,9,10,0\n", &o).unwrap();
        assert_eq!((d.rows, d.cols), (2, 5));
        // Shorter, not rising, not from 0 or 1, or not written as column numbers: data.
        for data in [
            "0,1,2,3\n5,6,7,1\n",
            "0,1,3,2,4\n5,6,7,8,1\n",
            "0,1,1,2,4\n5,6,7,8,1\n",
            "2,3,4,5,6\n5,6,7,8,1\n",
            "0,1,2,3.0,4\n5,6,7,8,1\n",
            "0,01,2,3,4\n5,6,7,8,1\n",
            "0,+1,2,3,4\n5,6,7,8,1\n",
        ] {
            assert_eq!(p(data, &o).unwrap().rows, 2, "{data}");
        }
        let absent = CsvOptions {
            header: Header::Absent,
            ..o.clone()
        };
        assert_eq!(p("0,1,2,3,4,5\n1,2,3,4,5,1\n", &absent).unwrap().rows, 2);
    }

    #[test]
    fn rows_without_labels() {
        let none = CsvOptions {
            label_column: LabelColumn::None,
            ..Default::default()
        };
        let rows = |text: &str, o: &CsvOptions| parse_rows(text, o, Path::new("t.csv"));
        let (r, layout) = rows("1,2\n3,4\n5,6\n", &none).unwrap();
        assert_eq!((r.rows, r.cols, r.labels), (3, 2, None));
        assert_eq!(r.features, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(
            (layout.columns, layout.describe_label()),
            (2, "no column (features only)".to_string())
        );
        // One feature is enough; a header is a line of names only.
        assert_eq!(rows("7\n8\n", &none).unwrap().0.features, vec![7.0, 8.0]);
        let (r, layout) = rows("a,b\n1,2\n", &none).unwrap();
        assert_eq!((r.rows, layout.names.len()), (1, 2));
        let err = rows("a,2\n1,2\n", &none).unwrap_err().to_string();
        assert!(
            err.contains("line 1: 'a' is not a number (if the first line"),
            "{err}"
        );
        assert!(matches!(
            rows("a,b\n", &none),
            Err(CohortError::EmptyData(_))
        ));
        // A training data set needs labels.
        assert!(matches!(
            p("1,2\n", &none),
            Err(CohortError::InvalidConfig(_))
        ));
        // With labels, rows carry them.
        let (r, layout) = rows("1,2,1\n3,4,0\n", &CsvOptions::default()).unwrap();
        assert_eq!(
            (r.cols, r.labels, layout.label_column),
            (2, Some(vec![1, 0]), Some(2))
        );
        // read_rows: a file as wide as a model's inputs has no labels, one wider has.
        let dir = std::env::temp_dir().join(format!("cohort-csv-rows-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("r.csv");
        std::fs::write(&f, "\u{feff}\n1,2,1\n3,4,0\n").unwrap();
        let o = CsvOptions::default();
        let (r, _) = read_rows(&f, &o, Some(3)).unwrap();
        assert_eq!((r.cols, r.labels), (3, None));
        let (r, _) = read_rows(&f, &o, Some(2)).unwrap();
        assert_eq!((r.cols, r.labels), (2, Some(vec![1, 0])));
        let last = CsvOptions {
            label_column: LabelColumn::Last,
            ..Default::default()
        };
        assert_eq!(read_rows(&f, &last, Some(3)).unwrap().0.cols, 2);
        std::fs::remove_dir_all(&dir).unwrap();
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
        let (s, _) = load(&f, &CsvOptions::default()).unwrap();
        assert_eq!((s.train.rows, s.test.rows), (8, 2));
        assert_eq!((s.train.cols, s.train.classes), (2, 2));
        let gz = dir.join("d.csv.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &std::fs::read(&f).unwrap()).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        let (z, _) = load(&gz, &CsvOptions::default()).unwrap();
        assert_eq!((z.train, z.test), (s.train, s.test));
        let other_seed = CsvOptions {
            seed: 1,
            test_fraction: 0.5,
            ..Default::default()
        };
        let (h, layout) = load(&f, &other_seed).unwrap();
        assert_eq!((h.train.rows, h.test.rows), (5, 5));
        assert_eq!(layout.describe_label(), "column 2 (the last)");
        // A pair of files: classes over both (the test file lacks class 2 here), headers alike.
        let (train, test) = (dir.join("train.csv"), dir.join("test.csv"));
        std::fs::write(&train, "a,label\n1,0\n2,1\n3,2\n").unwrap();
        std::fs::write(&test, "a,label\n1,1\n2,0\n").unwrap();
        let (pair, _) = load_pair(&train, &test, &CsvOptions::default()).unwrap();
        assert_eq!((pair.train.classes, pair.test.classes), (3, 3));
        assert_eq!((pair.train.rows, pair.test.rows), (3, 2));
        pair.validate_compatible().unwrap();
        std::fs::write(&test, "b,label\n1,1\n2,0\n").unwrap();
        let err = load_pair(&train, &test, &CsvOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("its header names other columns"), "{err}");
        // Rows of another width: said so (it named the label columns at their ends).
        std::fs::write(&test, "1,7,1\n2,8,0\n").unwrap();
        std::fs::write(&train, "1,0\n2,1\n3,2\n").unwrap();
        let err = load_pair(&train, &test, &CsvOptions::default()).unwrap_err();
        let want = "its rows have 3 columns, the training file's 2";
        assert!(err.to_string().contains(want), "{err}");
        std::fs::write(&train, "a,label\n1,0\n2,1\n3,2\n").unwrap();
        // A header guessed in the test file alone (pandas' column numbers) would lose a row
        // the training file's reading keeps: refused; a test file without one is read.
        std::fs::write(&train, "1,5,3,2,7\n0,4,4,1,2\n2,6,6,6,6\n").unwrap();
        std::fs::write(&test, "0,1,2,3,4\n1,3,1,4,1\n").unwrap();
        let first = CsvOptions {
            label_column: LabelColumn::Index(0),
            ..Default::default()
        };
        let err = load_pair(&train, &test, &first).unwrap_err().to_string();
        let want =
            "its first line (0,1,2,3,4) was taken for a header, and the training file has none";
        assert!(err.contains(want), "{err}");
        let absent = CsvOptions {
            header: Header::Absent,
            ..first
        };
        assert_eq!(load_pair(&train, &test, &absent).unwrap().0.test.rows, 2);
        std::fs::write(&train, "label,a,b,c,d\n1,5,3,2,7\n0,4,4,1,2\n2,6,6,6,6\n").unwrap();
        std::fs::write(&test, "1,3,1,4,1\n0,5,9,2,6\n").unwrap();
        assert_eq!(load_pair(&train, &test, &first).unwrap().0.test.rows, 2);
        std::fs::write(&train, "a,label\n1,0\n2,1\n3,2\n").unwrap();
        // A test file of one class is scored as the training file's classes.
        std::fs::write(&test, "a,label\n1,0\n2,0\n").unwrap();
        let (pair, _) = load_pair(&train, &test, &CsvOptions::default()).unwrap();
        assert_eq!(
            (pair.test.classes, pair.test.labels.clone()),
            (3, vec![0, 0])
        );
        // The training file still needs two.
        let err = load_pair(&test, &train, &CsvOptions::default()).unwrap_err();
        assert!(err.to_string().contains("at least 2 classes"), "{err}");
        // Latin-1 text: the line with the first byte that is not UTF-8. UTF-16 text (ASCII in
        // it gives NUL bytes, valid UTF-8): refused at its first NUL.
        let utf16: Vec<u8> = "1,2,0\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let not_text = [
            (
                b"1,2,0\n3,4,1\n# caf\xe9\n".to_vec(),
                "line 3: not UTF-8 text (save it as UTF-8)",
            ),
            (
                utf16,
                "line 1: not UTF-8 text (a NUL byte: UTF-16?) (save it as UTF-8)",
            ),
        ];
        let refused = dir.join("refused.csv");
        for (bytes, want) in not_text {
            std::fs::write(&refused, bytes).unwrap();
            let err = load(&refused, &CsvOptions::default())
                .unwrap_err()
                .to_string();
            assert!(err.ends_with(want), "{err}");
        }
        // Over a mebibyte, stored and gzipped: a character of three bytes cut by the end of the
        // first mebibyte read is whole once the rest comes; a NUL past it is found, on its line.
        let row = "1,2,0\n3,4,1\n";
        let mut text = row.repeat((1 << 20) / row.len());
        text.truncate(text.rfind('\n').unwrap() + 1);
        let pad = (1 << 20) - text.len() - 3;
        text.push_str(&format!("#{}\u{20ac}\n{row}", "x".repeat(pad)));
        assert_eq!(
            text.as_bytes()[(1 << 20) - 1],
            0x82,
            "the euro sign's second byte"
        );
        let lines = text.lines().count();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, text.as_bytes()).unwrap();
        let long = dir.join("long.csv");
        for bytes in [text.as_bytes().to_vec(), gz.finish().unwrap()] {
            std::fs::write(&long, &bytes).unwrap();
            let (data, _) = read(&long, &CsvOptions::default()).unwrap();
            assert_eq!(data.rows, lines - 1, "every row but the comment");
        }
        std::fs::write(&long, format!("{text}5,6\0,1\n")).unwrap();
        let err = read(&long, &CsvOptions::default()).unwrap_err().to_string();
        assert!(
            err.ends_with(&format!(
                "line {}: not UTF-8 text (a NUL byte: UTF-16?) (save it as UTF-8)",
                lines + 1
            )),
            "{err}"
        );
        assert!(matches!(
            load(dir.join("nope.csv"), &CsvOptions::default()),
            Err(CohortError::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
