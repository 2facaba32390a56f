//! The token and block structure shared by `dhcpd.conf` and `dhcpd.leases`: words, quoted
//! strings (with ISC's escapes), punctuation, `#` comments; statements end with `;`, blocks are
//! `head { body }`.

/// One token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tok {
    /// Anything unquoted: keywords, numbers, addresses, `aa:bb:cc` hex, names.
    Word(String),
    /// A quoted string, escapes resolved (`\NNN` octal, `\xNN`, `\n`, `\t`, `\r`, `\b`).
    Str(Vec<u8>),
    /// One of `{ } ; , = ( ) !`.
    Punct(char),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub tok: Tok,
    /// 1-based line of the file.
    pub line: usize,
}

impl Token {
    pub fn word(&self) -> Option<&str> {
        match &self.tok {
            Tok::Word(w) => Some(w),
            _ => None,
        }
    }

    pub fn is_punct(&self, c: char) -> bool {
        self.tok == Tok::Punct(c)
    }
}

const PUNCT: &[char] = &['{', '}', ';', ',', '=', '(', ')', '!'];

/// Splits `text` into tokens.
pub fn lex(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            '"' => {
                let start = line;
                let mut bytes = Vec::new();
                loop {
                    let Some(c) = chars.next() else {
                        return Err(format!("line {start}: unterminated string"));
                    };
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some('n') => bytes.push(b'\n'),
                            Some('t') => bytes.push(b'\t'),
                            Some('r') => bytes.push(b'\r'),
                            Some('b') => bytes.push(8),
                            Some('x') => {
                                let mut v = 0u32;
                                let mut n = 0;
                                while n < 2 {
                                    match chars.peek().and_then(|c| c.to_digit(16)) {
                                        Some(d) => {
                                            v = v * 16 + d;
                                            chars.next();
                                            n += 1;
                                        }
                                        None => break,
                                    }
                                }
                                bytes.push(v as u8);
                            }
                            Some(d @ '0'..='7') => {
                                let mut v = d.to_digit(8).unwrap_or(0);
                                for _ in 0..2 {
                                    match chars.peek().and_then(|c| c.to_digit(8)) {
                                        Some(d) => {
                                            v = v * 8 + d;
                                            chars.next();
                                        }
                                        None => break,
                                    }
                                }
                                bytes.push((v & 0xff) as u8);
                            }
                            Some(other) => {
                                if other == '\n' {
                                    line += 1;
                                }
                                push_char(&mut bytes, other);
                            }
                            None => return Err(format!("line {start}: unterminated string")),
                        },
                        other => {
                            if other == '\n' {
                                line += 1;
                            }
                            push_char(&mut bytes, other);
                        }
                    }
                }
                out.push(Token {
                    tok: Tok::Str(bytes),
                    line: start,
                });
            }
            c if PUNCT.contains(&c) => out.push(Token {
                tok: Tok::Punct(c),
                line,
            }),
            c => {
                let mut word = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || n == '"' || n == '#' || PUNCT.contains(&n) {
                        break;
                    }
                    word.push(n);
                    chars.next();
                }
                out.push(Token {
                    tok: Tok::Word(word),
                    line,
                });
            }
        }
    }
    Ok(out)
}

fn push_char(bytes: &mut Vec<u8>, c: char) {
    let mut buf = [0u8; 4];
    bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

/// A statement (`words… ;`) or a block (`head… { body }`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Stmt {
        line: usize,
        words: Vec<Token>,
    },
    Block {
        line: usize,
        head: Vec<Token>,
        body: Vec<Item>,
    },
}

impl Item {
    pub fn line(&self) -> usize {
        match self {
            Item::Stmt { line, .. } | Item::Block { line, .. } => *line,
        }
    }

    /// The statement's words, or the block's head.
    pub fn head(&self) -> &[Token] {
        match self {
            Item::Stmt { words, .. } => words,
            Item::Block { head, .. } => head,
        }
    }

    /// The first word, lower-cased (`""` when the item starts with something else).
    pub fn keyword(&self) -> String {
        self.head()
            .first()
            .and_then(Token::word)
            .unwrap_or("")
            .to_ascii_lowercase()
    }
}

/// Parses tokens into items. `option … code N = { … };` record definitions keep their braces
/// inside the statement.
pub fn parse(tokens: &[Token]) -> Result<Vec<Item>, String> {
    let mut pos = 0;
    let items = parse_body(tokens, &mut pos, None)?;
    Ok(items)
}

fn parse_body(tokens: &[Token], pos: &mut usize, open: Option<usize>) -> Result<Vec<Item>, String> {
    let mut items = Vec::new();
    let mut head: Vec<Token> = Vec::new();
    let mut inner_braces = 0usize;
    while let Some(t) = tokens.get(*pos) {
        *pos += 1;
        let in_option = head.first().and_then(Token::word) == Some("option");
        match &t.tok {
            Tok::Punct(';') if inner_braces == 0 => {
                if !head.is_empty() {
                    items.push(Item::Stmt {
                        line: head[0].line,
                        words: std::mem::take(&mut head),
                    });
                }
            }
            Tok::Punct('{') if in_option => {
                inner_braces += 1;
                head.push(t.clone());
            }
            Tok::Punct('}') if in_option && inner_braces > 0 => {
                inner_braces -= 1;
                head.push(t.clone());
            }
            Tok::Punct('{') => {
                let line = head.first().map_or(t.line, |h| h.line);
                let body = parse_body(tokens, pos, Some(t.line))?;
                items.push(Item::Block {
                    line,
                    head: std::mem::take(&mut head),
                    body,
                });
            }
            Tok::Punct('}') => {
                if !head.is_empty() {
                    return Err(format!(
                        "line {}: statement without ';' before '}}'",
                        head[0].line
                    ));
                }
                return match open {
                    Some(_) => Ok(items),
                    None => Err(format!("line {}: '}}' without '{{'", t.line)),
                };
            }
            _ => head.push(t.clone()),
        }
    }
    if let Some(line) = open {
        return Err(format!("line {line}: '{{' is never closed"));
    }
    if let Some(first) = head.first() {
        return Err(format!("line {}: statement without ';'", first.line));
    }
    Ok(items)
}

/// The text of tokens, roughly as written (for messages).
pub fn show(tokens: &[Token]) -> String {
    let mut s = String::new();
    for t in tokens {
        let piece = match &t.tok {
            Tok::Word(w) => w.clone(),
            Tok::Str(b) => format!("\"{}\"", String::from_utf8_lossy(b).escape_default()),
            Tok::Punct(c) => c.to_string(),
        };
        if !s.is_empty() && !matches!(t.tok, Tok::Punct(',') | Tok::Punct(';')) {
            s.push(' ');
        }
        s.push_str(&piece);
    }
    s
}
