//! Reading a caption back into the spec it states: the inverse of `caption::describe`, for prompts
//! typed by people as well as the world's own captions.

use super::scene::{Layout, ObjectSpec, Spec};
use super::vocab::{Background, Color, Place, Relation, Shape, Size};
use crate::{Error, Result};

/// Parses a world caption ("a small blue star on the left on a night background", "a night
/// background with two pink squares", "a yellow triangle to the left of a purple ring").
/// Case and a final full stop are ignored; anything else outside the grammar is an error that
/// names the word at fault.
pub fn parse(caption: &str) -> Result<Spec> {
    let text = caption.trim().trim_end_matches('.').to_lowercase();
    let mut p = Parser { words: text.split_whitespace().collect(), at: 0, caption };
    let mut background = None;
    if p.peek(0) == Some("a") && p.peek(1).and_then(Background::from_name).is_some() && p.peek(2) == Some("background") {
        background = p.peek(1).and_then(Background::from_name);
        p.at += 3;
        p.expect("with")?;
    }
    let (first, plural) = p.object()?;
    let mut objects = vec![first];
    let mut place = None;
    let mut relation = None;
    while p.peek(0).is_some() {
        if let Some(found) = Place::ALL.iter().copied().find(|pl| p.eat(pl.phrase())) {
            p.once(place.replace(found).is_none() && relation.is_none() && !plural, "a place")?;
        } else if let Some(found) = Relation::ALL.iter().copied().find(|r| p.eat(r.phrase())) {
            p.once(relation.replace(found).is_none() && place.is_none() && !plural, "a relation")?;
            let (second, second_plural) = p.object()?;
            p.once(!second_plural, "\"two\" after a relation")?;
            objects.push(second);
        } else if p.eat("on") {
            let bg = p.background_phrase()?;
            p.once(background.replace(bg).is_none(), "a background")?;
        } else {
            return Err(p.error("a place, a relation or \"on a ... background\""));
        }
    }
    let layout = match (plural, relation) {
        (true, _) => {
            objects.push(first);
            Layout::Plural
        }
        (false, Some(relation)) => Layout::Pair { relation },
        (false, None) => Layout::Single { place },
    };
    Ok(Spec { background, layout, objects })
}

struct Parser<'a> {
    words: Vec<&'a str>,
    at: usize,
    caption: &'a str,
}

impl<'a> Parser<'a> {
    fn peek(&self, ahead: usize) -> Option<&'a str> {
        self.words.get(self.at + ahead).copied()
    }

    fn next(&mut self) -> Option<&'a str> {
        let word = self.peek(0);
        self.at += 1;
        word
    }

    /// Consumes a phrase if the next words spell it.
    fn eat(&mut self, phrase: &str) -> bool {
        let n = phrase.split(' ').count();
        let matches = phrase.split(' ').enumerate().all(|(i, w)| self.peek(i) == Some(w));
        if matches {
            self.at += n;
        }
        matches
    }

    fn expect(&mut self, word: &str) -> Result<()> {
        if self.eat(word) {
            Ok(())
        } else {
            Err(self.error(&format!("\"{word}\"")))
        }
    }

    /// Fails unless `ok`, saying what came more than once or in the wrong place.
    fn once(&self, ok: bool, what: &str) -> Result<()> {
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidInput(format!("caption `{}`: {what} is not allowed here (word {})", self.caption, self.at)))
        }
    }

    fn error(&self, wanted: &str) -> Error {
        let found = self.peek(0).map_or("the end".to_string(), |w| format!("`{w}`"));
        Error::InvalidInput(format!("caption `{}`: expected {wanted} at word {}, found {found}", self.caption, self.at + 1))
    }

    /// "a|an [size] colour shape" or "two [size] colour shapes"; returns whether it was plural.
    fn object(&mut self) -> Result<(ObjectSpec, bool)> {
        let plural = match self.peek(0) {
            Some("a" | "an") => false,
            Some("two") => true,
            _ => return Err(self.error("\"a\", \"an\" or \"two\"")),
        };
        self.at += 1;
        let size = self.peek(0).and_then(Size::from_name);
        if size.is_some() {
            self.at += 1;
        }
        let color = self.peek(0).and_then(Color::from_name).ok_or_else(|| self.error("a colour"))?;
        self.at += 1;
        let word = self.peek(0).unwrap_or_default();
        let shape = if plural { Shape::from_plural(word) } else { Shape::from_name(word) };
        let shape = shape.ok_or_else(|| self.error(if plural { "a shape in the plural" } else { "a shape" }))?;
        self.at += 1;
        Ok((ObjectSpec { color, shape, size }, plural))
    }

    /// "a|an BG background", after "on".
    fn background_phrase(&mut self) -> Result<Background> {
        if !matches!(self.next(), Some("a" | "an")) {
            self.at -= 1;
            return Err(self.error("\"a\""));
        }
        let bg = self.peek(0).and_then(Background::from_name).ok_or_else(|| self.error("a background name"))?;
        self.at += 1;
        self.expect("background")?;
        Ok(bg)
    }
}

/// A scene drawn from what a caption states, the rest filled in from `seed`.
pub fn scene_for_caption(caption: &str, seed: u64) -> Result<super::scene::Scene> {
    super::scene::realize(&parse(caption)?, &mut crate::rng::Rng::new(seed))
}
