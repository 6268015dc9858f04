//! The layout half of composition (see the parent module): a prompt's clauses, one per concept
//! or object, and where each one's region lies, read from the prompt's own words.

use crate::world::{Place, Relation, Size};

/// One concept's share of a prompt: the text that describes it, and where it goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    /// The one-object prompt its concept draws with ("a large <moon> in the center").
    pub prompt: String,
    /// The region's centre, `[x, y]` in `[0, 1]`: a latent cell belongs to the nearest centre,
    /// softly near the borders ([`super::region_masks`]).
    pub center: [f32; 2],
}

/// The background every clause names when the prompt names none. The regions are drawn apart
/// ([`super::PrivateViews`]), so each concept's block would otherwise pick its own (one region on
/// night, the other on sand: the eight taught concepts composed 31 of 64 pairs so, 52 of 64 on
/// one named background; session note of 2026-11-27 on issue 5). Gray is the world's neutral one
/// and a plain studio backdrop for real checkpoints; a background the prompt names wins.
pub const DEFAULT_BACKGROUND: &str = "gray";

/// Splits `prompt` at the concepts' tokens (in `tokens`, each occurring in the prompt) into one
/// clause per concept, in the order of `tokens`; `None` when a token is missing or two clauses
/// would get the same region.
pub fn layout(prompt: &str, tokens: &[&str]) -> Option<Vec<Clause>> {
    let (prompt, scene) = scene_or_default(prompt);
    let found: Vec<(usize, usize)> = tokens.iter().map(|t| prompt.find(t).map(|at| (at, at + t.len()))).collect::<Option<_>>()?;
    let regions = regions(&prompt, &found)?;
    let clauses = regions.into_iter().map(|(text, center)| Clause { prompt: one_object(&text, found.len()) + &scene, center });
    Some(clauses.collect())
}

/// The layout of a plain two-object prompt whose objects a relation joins ("a red circle to the
/// left of a blue square"): one clause per object, as [`layout`] gives one per concept; `None`
/// when the prompt names no relation, more than one, nothing on one side of it, or a learned
/// concept (`<name>`: those compose by concept, [`super::Composer::plan`], or are drawn whole).
pub fn object_layout(prompt: &str) -> Option<Vec<Clause>> {
    if prompt.contains('<') {
        return None;
    }
    let (text, scene) = scene_or_default(prompt);
    let found: Vec<usize> = Relation::ALL.iter().filter_map(|r| find_word(&text, r.phrase())).collect();
    let [at] = found[..] else { return None };
    // The first subject is everything before the relation; the second starts right after it
    // (an empty span there: `regions` cuts the text between them at the relation phrase).
    let regions = regions(&text, &[(0, at), (text.len(), text.len())])?;
    if regions.iter().any(|(t, _)| t.split_whitespace().count() < 2) {
        return None;
    }
    Some(regions.into_iter().map(|(t, center)| Clause { prompt: one_object(&t, 2) + &scene, center }).collect())
}

/// One region per subject of `prompt`, the subjects at byte spans `found` (`[start, end)`, in
/// any order, not overlapping): `(the subject's clause, its region centre)` in the order of
/// `found`; `None` when two spans overlap or two regions would coincide.
pub(crate) fn regions(prompt: &str, found: &[(usize, usize)]) -> Option<Vec<(String, [f32; 2])>> {
    let mut order: Vec<usize> = (0..found.len()).collect();
    order.sort_unstable_by_key(|&k| found[k].0);
    // Each clause runs from the previous boundary to the next one; a boundary lies between two
    // subjects, at a relation phrase, else at " and " or a comma, else right after the first.
    let mut texts = Vec::with_capacity(found.len());
    let mut relations = Vec::new();
    let mut start = 0;
    for pair in order.windows(2) {
        let (first, second) = (found[pair[0]], found[pair[1]]);
        // Overlapping spans give no layout rather than a panic.
        let gap = prompt.get(first.1..second.0)?;
        let (cut, resume, relation) = boundary(gap);
        texts.push(prompt[start..first.1 + cut].trim().to_string());
        relations.push(relation);
        start = first.1 + resume;
    }
    texts.push(prompt[start..].trim().to_string());
    let centers = centers(&texts, &relations)?;
    let mut out: Vec<(usize, (String, [f32; 2]))> = order.into_iter().zip(texts.into_iter().zip(centers)).collect();
    out.sort_by_key(|(k, _)| *k);
    Some(out.into_iter().map(|(_, r)| r).collect())
}

/// The scene's background phrase ("on a sand background", or the leading "a sand background
/// with"), taken out of `prompt` to go into every clause as " on a sand background": one
/// background for the whole image, in the form the world's one-object captions use.
pub(crate) fn scene_background(prompt: &str) -> (String, Option<String>) {
    let words: Vec<&str> = prompt.split_whitespace().collect();
    for i in 2..words.len() {
        if words[i] != "background" {
            continue;
        }
        let (from, to) = if i >= 3 && words[i - 3] == "on" && is_article(words[i - 2]) {
            (i - 3, i + 1)
        } else if is_article(words[i - 2]) && words.get(i + 1) == Some(&"with") {
            (i - 2, i + 2)
        } else {
            continue;
        };
        let phrase = format!(" on {} {} background", words[i - 2], words[i - 1]);
        let rest: Vec<&str> = words[..from].iter().chain(&words[to..]).copied().collect();
        return (rest.join(" "), Some(phrase));
    }
    (words.join(" "), None)
}

/// [`scene_background`], with [`DEFAULT_BACKGROUND`]'s phrase when the prompt names none.
fn scene_or_default(prompt: &str) -> (String, String) {
    let (rest, scene) = scene_background(prompt);
    (rest, scene.unwrap_or_else(|| format!(" on a {DEFAULT_BACKGROUND} background")))
}

fn is_article(word: &str) -> bool {
    word == "a" || word == "an"
}

/// Where the gap between two concept tokens splits: `(end of the first clause, start of the
/// second, the relation phrase found)`, byte offsets into `gap`.
fn boundary(gap: &str) -> (usize, usize, Option<Relation>) {
    for &relation in Relation::ALL {
        let phrase = relation.phrase();
        if let Some(at) = find_word(gap, phrase) {
            return (at, at + phrase.len(), Some(relation));
        }
    }
    for separator in [" and ", ","] {
        if let Some(at) = gap.find(separator) {
            return (at, at + separator.len(), None);
        }
    }
    (0, 0, None)
}

/// `phrase` in `text` as whole words.
fn find_word(text: &str, phrase: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    text.match_indices(phrase).map(|(at, _)| at).find(|&at| {
        let before = at == 0 || !bytes[at - 1].is_ascii_alphanumeric();
        let end = at + phrase.len();
        before && (end == bytes.len() || !bytes[end].is_ascii_alphanumeric())
    })
}

fn place_center(place: Place) -> [f32; 2] {
    match place {
        Place::Left => [0.25, 0.5],
        Place::Right => [0.75, 0.5],
        Place::Top => [0.5, 0.25],
        Place::Bottom => [0.5, 0.75],
        Place::Center => [0.5, 0.5],
    }
}

/// Squared distance.
pub(super) fn distance(a: [f32; 2], b: [f32; 2]) -> f32 {
    (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)
}

fn own_place(text: &str) -> Option<Place> {
    Place::ALL.iter().copied().find(|p| find_word(text, p.phrase()).is_some())
}

/// Region centres: every clause's own place when each names one; else two clauses joined by a
/// relation; else strips left to right. `None` when two regions would coincide.
fn centers(texts: &[String], relations: &[Option<Relation>]) -> Option<Vec<[f32; 2]>> {
    let places: Option<Vec<Place>> = texts.iter().map(|t| own_place(t)).collect();
    let centers: Vec<[f32; 2]> = match (places, relations) {
        (Some(places), _) => places.into_iter().map(place_center).collect(),
        (None, [Some(relation)]) => {
            let (first, second) = match relation {
                Relation::LeftOf => (Place::Left, Place::Right),
                Relation::RightOf => (Place::Right, Place::Left),
                Relation::Above => (Place::Top, Place::Bottom),
                Relation::Below => (Place::Bottom, Place::Top),
            };
            vec![place_center(first), place_center(second)]
        }
        _ => (0..texts.len()).map(|i| [(i as f32 + 0.5) / texts.len() as f32, 0.5]).collect(),
    };
    let distinct = centers.iter().enumerate().all(|(i, a)| centers[..i].iter().all(|b| distance(*a, *b) > 1e-6));
    distinct.then_some(centers)
}

/// The clause as a one-object prompt for its shifted view: its own place phrase (which set the
/// region) becomes "in the center"; with two regions, "large" unless it names a size (measured on
/// four taught concepts: small objects lose their concept's look, unsized ones come out small).
fn one_object(text: &str, regions: usize) -> String {
    let mut text = text.to_string();
    if let Some(place) = own_place(&text) {
        text = text.replacen(place.phrase(), "", 1).split_whitespace().collect::<Vec<_>>().join(" ");
    }
    let sized = Size::ALL.iter().any(|s| find_word(&text, s.name()).is_some());
    if regions == 2 && !sized {
        // After the clause's first article ("next to a large <b>"), else in front.
        let mut words: Vec<&str> = text.split_whitespace().collect();
        let at = words.iter().position(|w| is_article(w)).map_or(0, |i| i + 1);
        if at > 0 {
            words[at - 1] = "a";
        }
        words.insert(at, Size::Large.name());
        text = words.join(" ");
    }
    format!("{text} {}", Place::Center.phrase())
}
