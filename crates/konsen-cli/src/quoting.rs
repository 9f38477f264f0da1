//! Quoted strings and whitespace-separated words, as `etcdctl txn` reads
//! them.
//!
//! * `"..."`: Go's double-quoted string literal (what etcdctl's `%q` scan
//!   reads): `\a \b \f \n \r \t \v \\ \"`, `\xHH` and `\OOO` (one byte
//!   each, so keys need not be UTF-8), `\uHHHH` and `\UHHHHHHHH` (one
//!   character, as UTF-8).
//! * `'...'` and `` `...` ``: raw, no escapes.
//! * A word that starts with no quote runs to the next whitespace; quotes
//!   inside it are plain characters (`a"b` is the three bytes `a"b`).

/// One word of a request line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Word {
    pub bytes: Vec<u8>,
    /// Written in quotes: never a flag, even if it starts with `--`.
    pub quoted: bool,
}

impl Word {
    /// The word as text, if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.bytes).ok()
    }
}

/// Whether `c` opens a quoted string.
pub fn is_quote(c: char) -> bool {
    matches!(c, '"' | '\'' | '`')
}

/// Splits `line` into words, unquoting quoted ones.
pub fn words(line: &str) -> Result<Vec<Word>, String> {
    let mut out = Vec::new();
    let mut rest = line.trim_start();
    while let Some(first) = rest.chars().next() {
        if is_quote(first) {
            let (bytes, after) = unquote(rest)?;
            if after.chars().next().is_some_and(|c| !c.is_whitespace()) {
                return Err(format!("text right after a closing quote: {after}"));
            }
            out.push(Word {
                bytes,
                quoted: true,
            });
            rest = after;
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            out.push(Word {
                bytes: rest.as_bytes()[..end].to_vec(),
                quoted: false,
            });
            rest = &rest[end..];
        }
        rest = rest.trim_start();
    }
    Ok(out)
}

/// Reads the quoted string at the start of `s` (which must start with a
/// quote); returns its bytes and the text after the closing quote.
pub fn unquote(s: &str) -> Result<(Vec<u8>, &str), String> {
    let quote = s
        .chars()
        .next()
        .filter(|&c| is_quote(c))
        .ok_or_else(|| format!("expected a quoted string like \"text\", found {}", shown(s)))?;
    let body = &s[1..];
    if quote != '"' {
        let end = body
            .find(quote)
            .ok_or_else(|| format!("no closing {quote} in {s}"))?;
        return Ok((body.as_bytes()[..end].to_vec(), &body[end + 1..]));
    }
    let mut out = Vec::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &body[i + 1..])),
            '\\' => escape(&mut chars, &mut out)?,
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    Err(format!("no closing \" in {s}"))
}

/// What `s` starts with, for an error message.
fn shown(s: &str) -> String {
    match s.split_whitespace().next() {
        Some(word) => word.to_string(),
        None => "nothing".to_string(),
    }
}

/// Decodes one escape sequence, the backslash already read.
fn escape(chars: &mut std::str::CharIndices<'_>, out: &mut Vec<u8>) -> Result<(), String> {
    let (_, c) = chars
        .next()
        .ok_or("a backslash ends the line inside a quoted string")?;
    let byte = match c {
        'a' => 0x07,
        'b' => 0x08,
        'f' => 0x0c,
        'n' => b'\n',
        'r' => b'\r',
        't' => b'\t',
        'v' => 0x0b,
        '\\' => b'\\',
        '"' => b'"',
        'x' => u8::try_from(digits(chars, 2, 16, "\\x")?).expect("two hex digits fit a byte"),
        '0'..='7' => {
            let rest = digits(chars, 2, 8, "\\OOO")?;
            let value = c.to_digit(8).expect("an octal digit") * 64 + rest;
            u8::try_from(value).map_err(|_| format!("octal escape \\{value:o} is above \\377"))?
        }
        'u' | 'U' => {
            let width = if c == 'u' { 4 } else { 8 };
            let code = digits(chars, width, 16, if c == 'u' { "\\u" } else { "\\U" })?;
            let ch = char::from_u32(code)
                .ok_or_else(|| format!("\\{c}{code:x} is not a Unicode character"))?;
            out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
            return Ok(());
        }
        other => return Err(format!("unknown escape \\{other} in a quoted string")),
    };
    out.push(byte);
    Ok(())
}

/// Reads exactly `count` digits in `radix`.
fn digits(
    chars: &mut std::str::CharIndices<'_>,
    count: usize,
    radix: u32,
    name: &str,
) -> Result<u32, String> {
    let mut value = 0;
    for _ in 0..count {
        let digit = chars
            .next()
            .and_then(|(_, c)| c.to_digit(radix))
            .ok_or_else(|| format!("{name} needs {count} digits in base {radix}"))?;
        value = value * radix + digit;
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(s: &str, quoted: bool) -> Word {
        Word {
            bytes: s.as_bytes().to_vec(),
            quoted,
        }
    }

    #[test]
    fn double_quotes_take_go_escapes() {
        let (bytes, rest) =
            unquote(r#""a\"b\\c\n\t\x41\101\u00e9\U0001F600\a\b\f\r\v" tail"#).unwrap();
        assert_eq!(
            bytes,
            "a\"b\\c\n\tAAé😀\x07\x08\x0c\r\x0b".as_bytes().to_vec()
        );
        assert_eq!(rest, " tail");
        // Byte escapes make keys that are not UTF-8.
        assert_eq!(unquote(r#""\xff\000""#).unwrap().0, vec![0xff, 0]);
        assert_eq!(unquote(r#""""#).unwrap(), (Vec::new(), ""));
    }

    #[test]
    fn single_quotes_and_backquotes_are_raw() {
        assert_eq!(unquote(r"'a\n b'x").unwrap(), (br"a\n b".to_vec(), "x"));
        assert_eq!(
            unquote(r#"`say "hi"\`"#).unwrap().0,
            br#"say "hi"\"#.to_vec()
        );
    }

    #[test]
    fn bad_quoted_strings_say_why() {
        let cases = [
            (r#""open"#, "no closing"),
            ("'open", "no closing"),
            (r#""\q""#, "unknown escape \\q"),
            (r#""\'""#, "unknown escape \\'"),
            (r#""\x4""#, "\\x needs 2 digits"),
            (r#""\400""#, "above \\377"),
            (r#""\ud800""#, "not a Unicode character"),
            ("\"a\\", "backslash ends the line"),
            ("bare", "expected a quoted string"),
        ];
        for (input, wanted) in cases {
            let err = unquote(input).unwrap_err();
            assert!(err.contains(wanted), "{input}: {err}");
        }
    }

    #[test]
    fn words_split_on_whitespace_and_unquote() {
        assert_eq!(
            words(r#"  put  "a key" 'raw \n'  plain "--prefix" --prefix a"b  "#).unwrap(),
            vec![
                word("put", false),
                word("a key", true),
                word(r"raw \n", true),
                word("plain", false),
                word("--prefix", true),
                word("--prefix", false),
                word("a\"b", false),
            ]
        );
        assert_eq!(words("").unwrap(), Vec::new());
        assert!(
            words(r#"put "a"b"#)
                .unwrap_err()
                .contains("right after a closing quote")
        );
    }
}
