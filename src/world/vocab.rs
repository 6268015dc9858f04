//! The world's fixed vocabulary (../shared/world.md): backgrounds, colours, shapes, sizes, places
//! and relations, each with its caption word(s) and, where it has one, its exact sRGB value.

use serde::{Deserialize, Serialize};

/// Declares a closed set of named values: `ALL` in a fixed order, `name()` (the caption word, also
/// the JSON name) and `from_name()`, so that every list, table and parser is derived from one place.
macro_rules! named {
    ($(#[$doc:meta])* $ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $ty {
            $(#[serde(rename = $name)] $variant),+
        }

        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The word used in captions and JSON.
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }

            pub fn from_name(word: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.name() == word)
            }

            /// Position in `ALL`, for tables indexed by value.
            pub fn index(self) -> usize {
                self as usize
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

named!(
    /// The colour that fills the canvas.
    Background { Gray => "gray", Sky => "sky", Sand => "sand", Night => "night" }
);

named!(
    /// An object's flat fill colour.
    Color {
        Red => "red", Orange => "orange", Yellow => "yellow", Green => "green", Blue => "blue",
        Purple => "purple", Pink => "pink", Brown => "brown", White => "white", Black => "black",
    }
);

named!(
    /// An object's outline.
    Shape {
        Circle => "circle", Square => "square", Triangle => "triangle", Star => "star",
        Heart => "heart", Ring => "ring", Cross => "cross", Diamond => "diamond",
    }
);

named!(
    /// Small objects fit a box of about 14 px, large ones about 28 px.
    Size { Small => "small", Large => "large" }
);

named!(
    /// Where a lone object sits: its centre lies in the matching third of the canvas.
    Place { Left => "left", Right => "right", Top => "top", Bottom => "bottom", Center => "center" }
);

named!(
    /// How the first of two objects sits relative to the second ("A to the left of B").
    Relation { LeftOf => "left_of", RightOf => "right_of", Above => "above", Below => "below" }
);

impl Background {
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Background::Gray => [180, 180, 180],
            Background::Sky => [191, 227, 247],
            Background::Sand => [235, 217, 180],
            Background::Night => [35, 40, 80],
        }
    }
}

impl Color {
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Color::Red => [224, 60, 49],
            Color::Orange => [242, 140, 40],
            Color::Yellow => [245, 211, 39],
            Color::Green => [61, 163, 93],
            Color::Blue => [47, 111, 222],
            Color::Purple => [142, 68, 173],
            Color::Pink => [240, 110, 170],
            Color::Brown => [139, 90, 43],
            Color::White => [245, 245, 245],
            Color::Black => [30, 30, 30],
        }
    }

    /// The article English puts before this word ("an orange ring", "a red ring").
    pub fn article(self) -> &'static str {
        if self == Color::Orange {
            "an"
        } else {
            "a"
        }
    }
}

impl Shape {
    /// The plural noun, for "two pink squares".
    pub fn plural(self) -> &'static str {
        match self {
            Shape::Circle => "circles",
            Shape::Square => "squares",
            Shape::Triangle => "triangles",
            Shape::Star => "stars",
            Shape::Heart => "hearts",
            Shape::Ring => "rings",
            Shape::Cross => "crosses",
            Shape::Diamond => "diamonds",
        }
    }

    pub fn from_plural(word: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.plural() == word)
    }
}

impl Place {
    /// The caption phrase ("on the left", "in the center").
    pub fn phrase(self) -> &'static str {
        match self {
            Place::Left => "on the left",
            Place::Right => "on the right",
            Place::Top => "at the top",
            Place::Bottom => "at the bottom",
            Place::Center => "in the center",
        }
    }

    /// Whether a centre `[x, y]` in pixels lies in this place's region (world.md: x < 22, x > 42,
    /// y < 22, y > 42, or both within 22..42).
    pub fn contains(self, center: [f32; 2]) -> bool {
        let [x, y] = center;
        let mid = |v: f32| (22.0..=42.0).contains(&v);
        match self {
            Place::Left => x < 22.0,
            Place::Right => x > 42.0,
            Place::Top => y < 22.0,
            Place::Bottom => y > 42.0,
            Place::Center => mid(x) && mid(y),
        }
    }
}

/// How far apart two centres must be along a relation's axis (world.md).
pub const RELATION_MIN_DISTANCE: f32 = 16.0;

impl Relation {
    /// The caption phrase between the two objects ("to the left of", "above").
    pub fn phrase(self) -> &'static str {
        match self {
            Relation::LeftOf => "to the left of",
            Relation::RightOf => "to the right of",
            Relation::Above => "above",
            Relation::Below => "below",
        }
    }

    /// The same fact stated from the other object: A left of B is B right of A.
    pub fn converse(self) -> Self {
        match self {
            Relation::LeftOf => Relation::RightOf,
            Relation::RightOf => Relation::LeftOf,
            Relation::Above => Relation::Below,
            Relation::Below => Relation::Above,
        }
    }

    /// Whether an object centred at `a` stands in this relation to one centred at `b`.
    pub fn holds(self, a: [f32; 2], b: [f32; 2]) -> bool {
        let d = RELATION_MIN_DISTANCE;
        match self {
            Relation::LeftOf => b[0] - a[0] >= d,
            Relation::RightOf => a[0] - b[0] >= d,
            Relation::Above => b[1] - a[1] >= d,
            Relation::Below => a[1] - b[1] >= d,
        }
    }

    /// Whether the relation separates objects horizontally (else vertically).
    pub fn horizontal(self) -> bool {
        matches!(self, Relation::LeftOf | Relation::RightOf)
    }
}

/// Euclidean distance between two sRGB triples.
pub fn rgb_distance(a: [u8; 3], b: [u8; 3]) -> f32 {
    let d = |i: usize| f32::from(a[i]) - f32::from(b[i]);
    (d(0) * d(0) + d(1) * d(1) + d(2) * d(2)).sqrt()
}

/// Objects whose colour is closer than this to the background are never drawn on it (a model
/// could not be asked to draw them legibly). With world.md's palette this rules out black on night
/// (51) and white on sky (57); every other pair is at least 71 apart (white on sand).
pub const MIN_CONTRAST: f32 = 60.0;

/// Whether an object of `color` may be drawn on `background`.
pub fn compatible(color: Color, background: Background) -> bool {
    rgb_distance(color.rgb(), background.rgb()) >= MIN_CONTRAST
}
