"""The rule/lexicon emotion annotator (the offline default; the paper used an LLM, whose labels
are not public): cue patterns per label, VADER with a domain-neutralised lexicon, the task's
item mentions masked first. Deterministic."""
from __future__ import annotations

import re
from typing import Callable, Sequence

from crsbench_plugins.ecr.emotion_base import EMOTIONS, Annotator

# Cue table: label -> [(regex on the lower-cased, title-masked text, weight)]. A label's cue
# score is the sum of the weights of the patterns that match (each pattern counts once),
# capped at CUE_CAP. Patterns under NEGATED_* are removed from the text before the cues run.
CUE_CAP = 2.0
_NEG = r"(?:don'?t|do not|didn'?t|did not|doesn'?t|does not|never|not|can'?t|cannot|wasn'?t|isn'?t)"
_ADV = (r"(?:really |also |just |do |absolutely |still |totally |definitely |actually |truly |kind of |kinda |usually "
        r"|generally |mostly |normally |always |tend to |so |that |too |very |much |all that )*")

CUES: dict[str, list[tuple[str, float]]] = {
    "like": [
        (rf"\b(?:i|we)(?:'m| am)? {_ADV}(?:like|liked|likes|love|loved|loves|adore|adored|enjoy|enjoyed|enjoying|dig|prefer)\b", 1.2),
        (r"\bfavou?rit|\b(?:big |huge )?fan of\b|\b(?:i'?m|i am) (?:a )?(?:big |huge )?fan\b", 1.0),
        (r"\b(?:i'?m|i am) (?:really |very |big )?into\b|\bmy (?:kind of|type of|style|thing)\b", 0.8),
        (r"\blov(?:e|ed|es|ing)\b", 0.6),
        (r"\b(?:was|is|are|were|'s) (?:a |an )?(?:really |so |very |pretty |such a |an? )*(?:good|great|awesome|amazing"
         r"|excellent|fantastic|funny|hilarious|brilliant|cool|fun)\b", 0.5),
    ],
    "curious": [
        (r"\?", 1.0),
        (r"^(?:what|how|which|who|where|when|why|is|are|do|does|did|have|has|can|could|would|any|anything)\b", 0.6),
        (r"\b(?:any|some|other) (?:more |other |good |great )?(?:suggestions?|recommendations?|ideas?|others?|options?)\b"
         r"|\banything (?:else|like|similar)\b", 0.8),
        (r"\b(?:can|could|would) you (?:please )?(?:recommend|suggest|help|find|tell|think)\b"
         r"|\bdo you (?:know|have|think|recommend|suggest)\b", 0.8),
        (r"\bi (?:want|need)\b|\blooking for\b|\bsearching for\b|\bin the mood for\b|\bwhat about\b|\bhow about\b|\bi wonder\b|\bcurious\b"
         r"|\bwhat(?:'s| is) it about\b|\bsuggest(?:ion)?s?\b|\brecommend|\bsimilar to\b", 0.6),
    ],
    "happy": [
        (r"\b(?:great|awesome|amazing|wonderful|fantastic|excellent|perfect|glad|happy|excited|yay|fun|cool|nice"
         r"|lovely|hilarious|ha(?:ha)+|he(?:he)+|lol|lmao)\b|[:;]-?[)d]\B|!{2,}", 0.6),
        (r"\bcan'?t wait\b|\blooking forward\b|\bmade my day\b|\bperfect\b", 0.6),
    ],
    "grateful": [
        (r"\bthanks?\b|\bthank (?:you|u)\b|\bthx\b|\bty\b|\bappreciate(?:d|s)?\b|\bgrateful\b|\bthankful\b"
         r"|\bsaved my life\b|\b(?:very |so |really )?helpful\b|\byou(?:'ve| have) been (?:a |very |so )*(?:great |big )?help\b",
         1.6),
    ],
    "negative": [
        (r"\bhat(?:e|ed|es|ing)\b|\bdislik(?:e|ed|es)\b|\bcan'?t stand\b", 1.2),
        (rf"\b{_NEG} {_ADV}(?:like|liked|love|loved|enjoy|enjoyed|care for|cared for|into|a (?:big |huge )?fan)\b"
         r"|\bnot (?:really |quite )?my (?:style|thing|type|cup of tea|kind)\b|\bnot a (?:big |huge )?(?:[\w-]+ ){0,3}fan\b"
         r"|\b(?:couldn'?t|could not|can'?t|cannot) get into\b", 1.2),
        (r"\bboring\b|\bbored\b|\bterrible\b|\bawful\b|\bworst\b|\bsucks?\b|\bmeh\b|\bugh\b|\bannoying\b|\bstupid\b"
         r"|\boverrated\b|\bdisappoint\w*|\bwaste of\b|\bhorrible\b|\bdumb\b|\bcheesy\b", 1.0),
        (r"\btoo (?:scary|violent|gory|long|slow|sad|dark|creepy|much|bloody|intense|childish|cheesy)\b"
         r"|\b(?:not|wasn'?t|isn'?t|weren'?t|aren'?t) (?:as |that |very |so |too |really |all that )?"
         r"(?:good|great|interesting|funny|impressed)\b|\bsad\b", 0.8),
        (r"\baverage\b|\bmediocre\b|\bso-so\b|\bjust (?:ok|okay|alright)\b|\bnot for me\b", 0.6),
    ],
    "nostalgia": [
        (r"\bas a (?:kid|child|teen(?:ager)?|youngster)\b|\bchildhood\b|\bused to\b|\bgrowing up\b|\bgrew up\b"
         r"|\bremember\w*|\bremind(?:s|ed)? me\b|\bback in the day\b|\bback then\b|\bnostalgi\w*"
         r"|\bwhen i was (?:young|younger|little|small|a kid|a child|a teen\w*|in (?:high |grade )?school)\b"
         r"|\byears ago\b|\bold[- ]school\b|\boldies\b|\bclassics?\b|\b(?:19)?[5-9]0'?s\b|\bthe good old\b", 1.0),
        (r"\bold(?:er)?\b|\bas a kid\b|\bkids?\b.*\b(?:loved|watched)\b", 0.5),
    ],
    "agreement": [
        (r"^\W*(?:yes|yeah|yea|yep|yup|sure|ok|okay|k|alright|all right|absolutely|definitely|of course|agreed|exactly"
         r"|true|right|same|me too|indeed|certainly)\b", 1.2),
        (r"\bsounds? (?:really |very |so |pretty |quite )?(?:good|great|fun|interesting|cool|nice|perfect|awesome|like a plan|amazing|fantastic)\b"
         r"|\bi agree\b|\bagree\b|\bthat works\b|\bgood (?:idea|choice|call|pick|one|suggestion)s?\b|\bme too\b"
         r"|\b(?:i'?ll|i will|i'?m going to|gonna) (?:definitely |have to |surely |probably |def )*(?:check|watch|give|look|add|try|see|rent)\b"
         r"|\bwill do\b|\bon my list\b|\b(?:take|have) a look\b|\bgive (?:it|that|them) a (?:shot|try|go|watch)\b|\bfor sure\b", 1.0),
    ],
    "surprise": [
        (r"\bw(?:o)+w\b|\bwhoa\b|\bwoah\b|\bomg\b|\boh my\b|\bno way\b|\breally\s*\?|\bseriously\s*\?"
         r"|\b(?:didn'?t|did not|never) (?:know|realize|realise|knew)\b|\bhad no idea\b|\bsurpris\w*"
         r"|\bcan'?t believe\b|\bunexpected\w*|\bshocked\b|\bout of nowhere\b", 1.2),
        (r"!", 0.15),
        (r"!.*!", 0.15),
    ],
}
# Phrases that look like a cue but are not one, rewritten before the cues run:
# (pattern, replacement).
NOT_CUES = [
    (r"\b(?:don'?t|do not|can'?t|cannot|barely|not|didn'?t|did not|doesn'?t|hardly) (?:really |even )?(?:remember|recall)\w*",
     " "),
    (r"\b(?:i'?d|i would) (?:really )?like\b", " i want "),  # a request (curious), not liking
    (r"\b(?:would you|you'?d|you would) like\b", " "),
    (r"\b(?:movies?|something|films?|ones?|any|anything|shows?|stuff) (?:like|similar to)\b", " similar to "),
]

# VADER scores the words of a movie domain as feelings: "I love horror movies" is not
# negative, "any comedies?" is not happy, "No, I haven't seen it" is not negative.
# These words are set to 0 in the annotator's copy of the VADER lexicon.
VADER_NEUTRAL_WORDS = (
    "horror", "horrors", "scary", "scare", "scared", "killer", "killers", "kill", "kills", "killing", "war", "wars",
    "crime", "dead", "death", "die", "evil", "ghost", "haunted", "fear", "terror", "terrifying", "violent",
    "violence", "bloody", "murder", "fight", "fights", "disaster", "scream", "attack", "revenge", "criminal",
    "prison", "destroy", "danger", "dangerous", "mad", "hell", "devil", "battle", "gun", "hunger", "shock",
    "shocking", "thriller", "thrillers", "comedy", "comedies", "romance", "romantic", "drama", "joker",
    "like", "help", "please", "recommend", "yes", "no", "sure", "okay", "ok", "want", "kind", "free", "hope",
    "sorry", "miss", "lost", "trouble", "pretty", "well", "fine", "interesting",
)
# Item mentions are masked before the rules read a text, so "Kill Bill (2003) was great"
# carries no "kill" cue. The task says where its mentions are (Task.mention_spans: ReDial's
# "Title (YYYY)", INSPIRED's catalogue titles); the annotator knows no spelling of its own.
def mask_mentions(text: str, spans, mask: str = "movie ") -> str:
    """``text`` with each ``(start, end)`` span replaced by ``mask`` (overlaps: the first wins)."""
    out, last = [], 0
    for start, end in sorted(spans):
        if start < last:
            continue
        out += [text[last:start], mask]
        last = end
    out.append(text[last:])
    return "".join(out)


class LexiconAnnotator(Annotator):
    """Rule/lexicon annotator (the offline default). For each text:

    1. the task's item mentions (``mention_spans``) are masked; the text is lower-cased and the
       phrases in :data:`NOT_CUES` rewritten (negated "remember" dropped, "I'd like" read as
       "I want", "movies like X" as "movies similar to X");
    2. each label's cue score is the sum of the weights of its :data:`CUES` patterns that
       match, capped at ``CUE_CAP``;
    3. VADER (domain-neutralised lexicon, :data:`VADER_NEUTRAL_WORDS`) adds
       ``vader_weight * compound`` to *happy* when compound > 0.05 and
       ``vader_weight * |compound|`` to *negative* when compound < -0.05;
    4. *negative* cues cancel the *like* and *happy* scores they contradict ("I didn't like
       it" matches "like" too): like and happy are reduced by the negative cue score;
    5. *neutral* (the fallback) scores ``max(0, 1 - sum of the other scores) + neutral_floor``;
    6. probabilities are the scores plus ``smoothing``, raised to ``sharpness`` and
       normalised to sum 1 (a softmax over log-scores with temperature 1/sharpness).
    """

    name = "lexicon"
    version = "1"

    def __init__(self, vader_weight: float = 1.2, neutral_floor: float = 0.1, smoothing: float = 0.02,
                 sharpness: float = 1.5, mention_spans: Callable[[str], Sequence[tuple[int, int]]] | None = None):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.vader = SentimentIntensityAnalyzer()
        self.vader.lexicon = dict(self.vader.lexicon)
        for word in VADER_NEUTRAL_WORDS:
            self.vader.lexicon.pop(word, None)
        self.vader_weight = vader_weight
        self.neutral_floor = neutral_floor
        self.smoothing = smoothing
        self.sharpness = sharpness
        self.mention_spans = mention_spans  # the task's (TaskData.mention_spans); None: nothing is masked
        self._cues = {label: [(re.compile(p), w) for p, w in cues] for label, cues in CUES.items()}
        self._not_cues = [(re.compile(p), repl) for p, repl in NOT_CUES]

    def scores(self, text: str) -> dict[str, float]:
        """The un-normalised rule scores of one text (steps 1-5)."""
        text = "" if text is None else str(text)
        masked = mask_mentions(text, self.mention_spans(text)) if self.mention_spans else text
        low = " ".join(masked.lower().replace("’", "'").split())
        for pattern, repl in self._not_cues:
            low = pattern.sub(repl, low)
        scores = dict.fromkeys(EMOTIONS, 0.0)
        for label, cues in self._cues.items():
            scores[label] = min(CUE_CAP, sum(w for pattern, w in cues if pattern.search(low)))
        compound = self.vader.polarity_scores(masked)["compound"]
        if compound > 0.05:
            scores["happy"] += self.vader_weight * compound
        elif compound < -0.05:
            scores["negative"] += self.vader_weight * -compound
        if scores["negative"] > 0:
            scores["like"] = max(0.0, scores["like"] - scores["negative"])
            scores["happy"] = max(0.0, scores["happy"] - scores["negative"])
        other = sum(v for label, v in scores.items() if label != "neutral")
        scores["neutral"] = max(0.0, 1.0 - other) + self.neutral_floor
        return scores

    def probs(self, text: str) -> dict[str, float]:
        scores = self.scores(text)
        raw = {label: (scores[label] + self.smoothing) ** self.sharpness for label in EMOTIONS}
        total = sum(raw.values())
        return {label: v / total for label, v in raw.items()}

    def annotate(self, texts: Sequence[str]) -> list[dict[str, float]]:
        return [self.probs(t) for t in texts]
