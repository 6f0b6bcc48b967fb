"""Multilingual lexicon of reasoning-elicitation cues and the text folding it matches against.

Cues are matched on a *squeezed* form of the text: compatibility-decomposed (NFKD), casefolded,
with combining marks, punctuation and spaces removed (newlines are kept as boundaries).
Obfuscations such as ``t.h.i.n.k  s-t-e-p by step``, fullwidth letters, zero-width spaces or
missing accents therefore fold to the same string as the plain cue. Patterns are written
readably (spaces, accents, kana with dakuten) and folded the same way when compiled at import.

Each cue has anchors, one of which occurs in every match: for scripts written with spaces, a stem
that starts a word ("reason" in "reasoning"); for CJK and Arabic, a substring of the squeezed text.
The matcher finds anchors in one pass and runs cue regexes only in windows around them.

Weights: 0.9 explicit request for the whole reasoning / chain of thought; 0.75-0.85 classic
triggers ("let's think step by step", "chain of thought", ``<think>``); 0.7 "show your reasoning";
0.55 "solve it step by step"; 0.3-0.45 "reason carefully", "walk me through"; 0.25 a bare
"step by step"; 0.15 "explain why".
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Non-ASCII punctuation, symbols, spaces and combining marks removed by the squeeze. Listed as
# explicit ranges (much faster in ``re`` than a negated ``\w`` class, which looks up categories).
_JUNK_RE = re.compile(
    "[\u00a0-\u00bf\u00d7\u00f7\u02b0-\u036f\u0482-\u0489\u055a-\u055f\u0589\u05be\u05c0-\u05c7"
    "\u0600-\u061f\u064b-\u065f\u0670\u06d4-\u06ed\u0964\u0965\u1680-\u180e\u2000-\u2bff"
    "\u2e00-\u2e7f\u3000-\u3006\u3008-\u3020\u3030-\u303f\u3099-\u309c\u30a0\u30fb"
    "\ufe00-\ufe6f\ufeff\uff00-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65]+"
)
# ASCII bytes deleted from the word text: everything but letters, digits and whitespace; other
# whitespace than newlines becomes a space.
_ASCII_DELETE = bytes(c for c in range(128) if not (chr(c).isalnum() or chr(c).isspace()))
_ASCII_SPACES = bytes.maketrans(b"\t\r\x0b\x0c\x1c\x1d\x1e\x1f", b"        ")


def fold(text: str) -> str:
    """NFKD + casefold (fullwidth -> ASCII, ligatures split, accents as separate marks)."""
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFKD", text).casefold()


def word_text(folded: str) -> str:
    """``fold``-ed text without punctuation, symbols and combining marks; words stay separated by
    single spaces or newlines ("s-t-e-p, by step!" -> "step by step")."""
    if folded.isascii():
        return folded.encode("ascii").translate(_ASCII_SPACES, _ASCII_DELETE).decode("ascii")
    raw = folded.encode("utf-8", "surrogatepass").translate(_ASCII_SPACES, _ASCII_DELETE)
    return _JUNK_RE.sub("", raw.decode("utf-8", "surrogatepass"))


def squeeze(words: str) -> str:
    """The word text without spaces (newlines stay as boundaries): what cue patterns match."""
    return words.replace(" ", "")


def _fold_pattern(pattern: str) -> str:
    """Fold a readable pattern like the text (its regex syntax is ASCII and survives)."""
    pattern = pattern.replace(" ?", "").replace(" ", "")  # optional spaces: the text has none
    return _JUNK_RE.sub("", unicodedata.normalize("NFKD", pattern).casefold().replace("'", ""))


# One row per cue: id ("<lang>.<name>"), weight, anchors (space-separated), pattern, example. Patterns
# are written readably; spaces are dropped and letters folded at compile time (the squeezed text
# has no spaces, accents or punctuation), so " ?" means "optional space" and is simply removed.
_Row = tuple[str, float, str, str, str]

_EN_SHOW = (
    "(?:show|give|write|print|include|provide|reveal|display|share|outline|present|explain|describe"
    "|detail|state|lay out|spell out|tell|output|dump|expose|walk me through)(?:me|us)?"
)
_EN_NOUN = (
    "(?:reasoning|thought process|thinking process|rationale|inner monologue|scratch ?pad"
    "|chains? of thoughts?)"
)
_EN_THINKING = "reason thought think monolog scratch rationale intermediate chain"
_EN_BENIGN = "(?!guide|tutorial|instruction|recipe|direction|plan|tour|checklist|walkthrough|setup|install)"
_ZH_THINK = "(?:推理|思考|思维|思維|推导|推導|解题|解題|分析)"
_ZH_THINK_ANCHORS = "推理 思考 思维 思維 推导 推導 解题 解題 分析"
_ZH_PROCESS = "(?:过程|過程|步骤|步驟|链|鏈|路径|路徑|思路)"
_ZH_STEP = "(?:一步一步|一步步|逐步|分步骤|分步驟|分步|循序渐进|循序漸進)"
_ZH_VERB = "(?:思考|推理|推导|推導|分析|解答|解决|解決|求解|计算|計算|想|论证|論證)"
_ES_SHOW = (
    "(?:muestra|muéstrame|muestre|explica|explícame|explique|detalla|detalle|expón|escribe|incluye"
    "|dame|comparte|describe)"
)
_PT_SHOW = "(?:mostre|mostra|explique|detalhe|escreva|inclua|me dê|apresente|descreva|exponha|compartilhe)"
_IT_SHOW = "(?:mostra|mostrami|spiega|spiegami|illustra|scrivi|esponi|dammi|descrivi|riporta|condividi)"
_FR_SHOW = (
    "(?:montre|montrez|explique|expliquez|détaille|détaillez|donne|donnez|écris|écrivez|expose|exposez"
    "|présente|présentez|décris|décrivez|partage|partagez)(?:moi|nous)?"
)
_FR_SBS = "(?:étape par étape|pas à pas)"
_DE_SHOW = (
    "(?:zeige|zeig|zeigen sie|erkläre|erklär|erläutere|erläutern sie|lege|leg|legen sie|schreibe"
    "|schreib|gib|geben sie|nenne|beschreibe|beschreib)(?:mir|uns)?(?:offen|dar)?"
)
_DE_NOUN = (
    "(?:gedankengang|gedankengänge|denkprozess|denkweg|lösungsweg|rechenweg|begründung|argumentation"
    "|überlegungen|zwischenschritte)"
)
_DE_ANCHORS = (
    "gedanken denkprozess denkweg lösungsweg rechenweg begründung argumentation überlegung zwischenschritt"
)
_DE_SBS = "(?:schritt f(?:ü|ue)r schritt|schrittweise)"  # "fuer": ASCII keyboards
_RU_SBS = "(?:шаг за шагом|пошагово|поэтапно|последовательно)"
_RU_NOUN = (
    "(?:(?:ход|цепочк[а-я]|процесс|логик[а-я])?(?:рассуждений|рассуждения|мыслей|размышлений)"
    "|(?:ход|процесс) решения)"
)
_RU_ANCHORS = "рассужд мысл размышл решения"
_UK_NOUN = "(?:хід|ланцюжок|процес)?(?:міркувань|роздумів|думок)"
_AR_NOUN = "(?:تفكيرك|استدلالك|منطقك|التفكير|الاستدلال|سلسلة التفكير|خطوات الحل|خطوات التفكير|عملية التفكير)"
_AR_ANCHORS = "تفكير استدلال منطق خطوات"
_TR_NOUN = "(?:akıl yürütme|düşünce süreci|düşünme süreci|çözüm adımları)"
_ID_NOUN = "(?:penalaran|proses berpikir|proses penalaran|alur pikir|jalan pikiran)"
_HI_NOUN = "(?:तर्क|विचार प्रक्रिया|सोचने की प्रक्रिया)"
_VI_NOUN = "(?:quá trình suy nghĩ|quá trình suy luận|lập luận|cách suy luận|các bước suy luận)"

# fmt: off
CUE_TABLE: tuple[_Row, ...] = (
    # --- English
    ("en.full_reasoning", 0.9, _EN_THINKING,
     "(?<!my)(?<![a-xz]our)(?:full|entire|complete|whole|raw|hidden|internal|unabridged|verbatim|unfiltered)"
     "(?:reasoning"
     "|thought process|thinking process|thinking|chains? of thoughts?|inner monologue|scratch ?pad"
     "|intermediate (?:steps|reasoning))|all (?:of )?(?:your |the )?(?:reasoning|thought process"
     "|thinking process|chains? of thoughts?|intermediate (?:steps|reasoning))",
     "Output your full thought process."),
    ("en.lets_think_step_by_step", 0.85, "step",
     "(?:let's|let us)(?:think|reason|work|go|solve)(?:this|it)?(?:out|through)?(?:this|it)?step by step",
     "Let's think step by step."),
    ("en.reason_before_answer", 0.8, "before first",
     "(?:(?:reasoning|rationale|thoughts|thinking|thought process)(?:out)?first"
     "|(?:reasoning|rationale|thoughts|thinking|thought process|think|reason|work)(?:it|this)?"
     "(?:out|through)?(?:carefully)?before(?:answering|you answer|giving|responding|replying"
     "|concluding|writing|(?:the|your) (?:final )?answer))",
     "Explain your reasoning before answering."),
    ("en.chain_of_thought", 0.75, "chain", "chains? of thoughts?", "Use chain-of-thought prompting."),
    ("en.think_step_by_step", 0.7, "step",
     "(?:think|reason|work|go)(?:it|this|that)?(?:out|through)?(?:it|this|that|the problem)?(?:carefully)?"
     "step by step",
     "Think step by step."),
    ("en.show_reasoning", 0.7, _EN_THINKING,
     _EN_SHOW + "(?:all )?(?:of )?(?:your |the |its )?(?:detailed |step by step |intermediate )?" + _EN_NOUN,
     "Show your reasoning."),
    ("en.step_by_step_reasoning", 0.6, "step",
     "step by step (?:reasoning|explanation|solution|derivation|analysis|thinking|thought|breakdown"
     "|proof|working)",
     "Give a step-by-step explanation."),
    ("en.show_work", 0.6, "show",
     "show(?:me|us)?(?:all (?:of )?(?:your |the )?|your )(?:intermediate )?"
     "(?:work|working|steps|derivations?|calculations?)",
     "Show your work."),
    ("en.detailed_derivation", 0.6, "derivation",
     "(?:detailed|full|complete|rigorous|whole|entire)(?:mathematical )?derivation",
     "Give a detailed derivation."),
    ("en.inner_monologue", 0.55, "monolog aloud loud scratch",
     "inner monologue|think(?:ing)? (?:out loud|aloud)|scratch ?pad", "Think out loud."),
    ("en.solve_step_by_step", 0.55, "step",
     "(?:solve|answer|explain|derive|calculate|compute|prove|analy[sz]e|break)(?:it|this|that|down"
     "|the problem|the question|each)?(?:down)?step by step",
     "Solve this step by step."),
    ("en.write_out_steps", 0.55, "writ",
     "writ(?:e|ing) out (?:every|each|all) (?:the )?(?:intermediate )?steps?",
     "Write out every intermediate step."),
    ("en.detailed_proof", 0.45, "proof",
     "(?:detailed|full|complete|rigorous) proof", "Write a rigorous proof."),
    ("en.reason_carefully", 0.4, "reason think",
     "(?:reason|think)(?:very|really|extra|more)?(?:carefully|deeply|thoroughly|rigorously|methodically"
     "|systematically|logically|critically)",
     "Reason carefully."),
    ("en.walk_through", 0.4, "walk", "walk (?:me|us) (?:step by step )?through", "Walk me through it."),
    ("en.justify_answer", 0.35, "answer",
     "(?:justify|explain|support) (?:your|the) answer", "Justify your answer."),
    ("en.deep_breath", 0.3, "breath", "take a deep breath", "Take a deep breath and work on this."),
    ("en.detailed_solution", 0.3, "detailed",
     "detailed (?:solution|explanation|walkthrough|analysis)", "I need a detailed solution."),
    ("en.step_by_step", 0.25, "step", "step by step" + _EN_BENIGN + "|one step at a time",
     "Go one step at a time."),
    ("en.explain_why", 0.15, "explain", "explain (?:briefly |shortly |quickly )?(?:why|how)",
     "Explain briefly why."),
    # --- Chinese (simplified and traditional)
    ("zh.full_process", 0.9, _ZH_THINK_ANCHORS,
     "(?:详细|詳細|完整|全部|整个|整個|所有|全面)的?" + _ZH_THINK + _ZH_PROCESS, "请给出详细的推理过程"),
    ("zh.chain_of_thought", 0.85, "链 鏈",
     "(?:思维|思維|思考|推理)(?:链|鏈)|(?:链|鏈)式思考", "使用思维链"),
    ("zh.step_think", 0.75, "一步 逐步 分步 循序",
     _ZH_STEP + "(?:地|的)?(?:进行|進行|来|來)?" + _ZH_VERB, "请一步一步地思考"),
    ("zh.show_process", 0.75, _ZH_THINK_ANCHORS,
     "(?:输出|輸出|展示|写出|寫出|给出|給出|列出|显示|顯示|展现|展現|说明|說明)(?:你的|你|一下)?"
     "(?:完整的?|全部的?)?" + _ZH_THINK + _ZH_PROCESS + "?",
     "展示你的思考过程"),
    ("zh.process", 0.6, _ZH_THINK_ANCHORS, _ZH_THINK + "(?:过程|過程|步骤|步驟)", "推理过程要写清楚"),
    ("zh.think_first", 0.6, "先",
     "先(?:思考|推理|分析|想)(?:一下)?(?:再|后|後|然后|然後)(?:回答|作答|答|给出|給出)", "先思考再回答"),
    ("zh.careful", 0.35, "仔 认真 認真 深入",
     "(?:仔细|仔細|认真|認真|深入)地?(?:思考|推理|分析)", "请仔细思考"),
    ("zh.step", 0.25, "一步 循序", "一步一步|一步步|循序渐进|循序漸進", "一步一步来"),
    ("zh.explain_why", 0.15, "解释 解釋 说明 說明",
     "(?:解释|解釋)(?:一下)?(?:为什么|為什麼|原因)|(?:说明|說明)(?:原因|理由)", "解释一下为什么"),
    # --- Japanese
    ("ja.process", 0.8, "過程 プロセス 経緯",
     "(?:思考|推論|推理|考え)の?(?:過程|プロセス|経緯)を?(?:すべて|全て|全部|詳しく|詳細に|省略せずに)?"
     "(?:示|出力|書|見せ|説明|記述|述べ)",
     "思考過程をすべて出力してください"),
    ("ja.chain_of_thought", 0.8, "連鎖 チェーン", "思考の?連鎖|チェーン オブ ソート", "思考の連鎖を使って"),
    ("ja.step_think", 0.75, "ステップ 段階 一歩 順を 順序",
     "(?:ステップ バイ ステップ|段階的|一歩ずつ|一歩一歩|順を追っ|順序立て)(?:に|で|て)?"
     "(?:考え|思考|推論|説明|解い|解き|解説|分析)",
     "ステップバイステップで考えてください"),
    ("ja.careful", 0.35, "考え", "(?:よく|じっくり|慎重に|注意深く)考え", "よく考えて答えて"),
    ("ja.step", 0.25, "ステップ 一歩 段階",
     "ステップ バイ ステップ|一歩ずつ|段階的に", "ステップバイステップで"),
    # --- Korean (Hangul folds to jamo: make a whole syllable optional with (?:의)?, never 의?)
    ("ko.process", 0.8, "과정",
     "(?:사고|추론|생각|풀이)(?:의)?과정(?:을|를)?(?:모두|전부|자세히|상세히|단계별로)?"
     "(?:보여|출력|설명|작성|써|적어|서술)",
     "추론 과정을 모두 보여 주세요"),
    ("ko.chain_of_thought", 0.8, "사슬 연쇄",
     "(?:사고|생각|추론)(?:의)?사슬|연쇄적 ?사고", "생각의 사슬을 사용해"),
    ("ko.step_think", 0.75, "단계 차근 하나씩",
     "(?:단계별로|단계적으로|차근차근|한 ?단계씩|하나씩)(?:생각|추론|설명|풀|분석|해결)",
     "단계별로 생각해 보세요"),
    ("ko.careful", 0.35, "생각 추론",
     "(?:신중하게|깊이|곰곰이|꼼꼼하게)(?:생각|추론)", "신중하게 생각해"),
    ("ko.step", 0.25, "단계 차근", "단계별로|단계적으로|차근차근", "단계별로"),
    # --- Spanish
    ("es.full_reasoning", 0.9, "razonamiento pensamiento",
     "(?:razonamiento|proceso de pensamiento|proceso de razonamiento)(?:completo|entero|detallado|íntegro)"
     "|todo (?:tu|el|su) (?:razonamiento|proceso de pensamiento)",
     "Dame tu razonamiento completo."),
    ("es.chain_of_thought", 0.8, "cadena", "cadenas? de pensamientos?", "Usa cadena de pensamiento."),
    ("es.think_step_by_step", 0.75, "paso",
     "(?:piensa|piense|pensemos|pensar|razona|razone|razonemos|razonar|vamos a pensar|vamos a razonar)"
     "(?:lo|la|esto)?(?:cuidadosamente)?paso a paso",
     "Piensa paso a paso."),
    ("es.show_reasoning", 0.7, "razonamiento pensamiento mental",
     _ES_SHOW + "(?:me)?(?:todo )?(?:tu |su |el )?"
     "(?:razonamiento|proceso de pensamiento|proceso de razonamiento|proceso mental)",
     "Muestra tu razonamiento."),
    ("es.solve_step_by_step", 0.55, "paso",
     "(?:resuelve|resuélvelo|resuelva|explica|explícalo|explique|analiza|calcula|deriva|demuestra)"
     "(?:lo|esto|el problema)?paso a paso",
     "Resuélvelo paso a paso."),
    ("es.careful", 0.4, "piens razon analiz",
     "(?:piensa|razona|analiza)(?:lo)?(?:con )?(?:cuidado|cuidadosamente|detenidamente|a fondo)",
     "Piensa con cuidado."),
    ("es.step_by_step", 0.25, "paso",
     "(?<!guia)(?<!receta)(?<!tutorial)paso a paso", "Hazlo paso a paso."),
    ("es.explain_why", 0.15, "explica", "explica(?:me)?(?:brevemente )?(?:por qué|el porqué)",
     "Explica por qué."),
    # --- Portuguese
    ("pt.full_reasoning", 0.9, "raciocínio pensamento",
     "(?:raciocínio|processo de pensamento)(?:completo|inteiro|detalhado|integral)"
     "|todo (?:o )?(?:seu |teu )?(?:raciocínio|processo de pensamento)",
     "Mostre o raciocínio completo."),
    ("pt.chain_of_thought", 0.8, "cadeia", "cadeias? de pensamentos?", "Use cadeia de pensamento."),
    ("pt.think_step_by_step", 0.75, "passo",
     "(?:pense|pensemos|vamos pensar|raciocine|raciocinemos|vamos raciocinar|reflita)(?:nisso)?"
     "(?:com cuidado)?passo a passo",
     "Pense passo a passo."),
    ("pt.show_reasoning", 0.7, "raciocínio pensamento",
     _PT_SHOW + "(?:me)?(?:todo )?(?:o )?(?:seu |teu )?"
     "(?:raciocínio|processo de pensamento|processo de raciocínio|linha de raciocínio)",
     "Mostre seu raciocínio."),
    ("pt.solve_step_by_step", 0.55, "passo",
     "(?:resolva|explique|analise|calcule|demonstre|derive)(?:isso|o problema)?passo a passo",
     "Resolva passo a passo."),
    ("pt.step_by_step", 0.25, "passo",
     "(?<!guia)(?<!receita)(?<!tutorial)passo a passo", "Faça passo a passo."),
    # --- Italian
    ("it.full_reasoning", 0.9, "ragionament",
     "ragionamento (?:completo|dettagliato|intero)|(?:tutto il|l'intero) ragionamento",
     "Mostrami il ragionamento completo."),
    ("it.chain_of_thought", 0.8, "catena", "catena di pensier[oi]", "Usa la catena di pensiero."),
    ("it.think_step_by_step", 0.75, "passo",
     "(?:pensa|ragiona|pensiamo|ragioniamo|rifletti|riflettiamo|pensaci|ragionaci)(?:con attenzione)?"
     "passo (?:dopo |per |a )?passo",
     "Ragiona passo dopo passo."),
    ("it.show_reasoning", 0.7, "ragionament pensiero mentale",
     _IT_SHOW + "(?:tutto )?(?:il tuo |il |tuo )?(?:ragionamento|processo di pensiero|processo mentale)",
     "Mostra il tuo ragionamento."),
    ("it.solve_step_by_step", 0.55, "passo",
     "(?:risolvi|spiega|analizza|calcola|dimostra)(?:lo|il problema)?passo (?:dopo |per )passo",
     "Risolvilo passo dopo passo."),
    ("it.step_by_step", 0.25, "passo", "passo (?:dopo|per) passo", "Procedi passo dopo passo."),
    # --- French
    ("fr.full_reasoning", 0.9, "raisonnement réflexion cheminement",
     "(?:raisonnement|processus de réflexion|cheminement)(?:complet|détaillé|entier|intégral)"
     "|(?:tout (?:ton|votre|le)|l'ensemble de (?:ton|votre)) (?:raisonnement|processus de réflexion"
     "|cheminement)",
     "Donne-moi ton raisonnement complet."),
    ("fr.chain_of_thought", 0.8, "pensée", "chaînes? de pensées?", "Utilise une chaîne de pensée."),
    ("fr.think_step_by_step", 0.75, "étape pas",
     "(?:pense|pensez|pensons|réfléchis|réfléchissez|réfléchissons|raisonne|raisonnez|raisonnons)"
     "(?:y|bien)?" + _FR_SBS,
     "Pense étape par étape."),
    ("fr.show_reasoning", 0.7, "raisonnement réflexion cheminement démarche",
     _FR_SHOW + "(?:tout )?(?:ton |votre |le |ta )?(?:raisonnement|processus de réflexion|cheminement"
     "|démarche)",
     "Montre-moi ton raisonnement."),
    ("fr.solve_step_by_step", 0.55, "étape pas",
     "(?:résous|résolvez|explique|expliquez|analyse|analysez|calcule|calculez|démontre|démontrez"
     "|détaille|détaillez)(?:le|la|les|ceci|cela|ça)?" + _FR_SBS,
     "Résous-le étape par étape."),
    ("fr.step_by_step", 0.25, "étape pas", "(?<!guide)" + _FR_SBS, "Procède étape par étape."),
    ("fr.explain_why", 0.15, "pourquoi", "expliquez?(?:moi|nous)?pourquoi", "Explique-moi pourquoi."),
    # --- German
    ("de.full_reasoning", 0.9, _DE_ANCHORS,
     "(?:gesamten|ganzen|vollständigen|kompletten|gesamte|ganze|vollständige|komplette)"
     "(?:gedankengang|gedankengänge|denkprozess|denkweg|argumentation)",
     "Zeige deinen vollständigen Gedankengang."),
    ("de.chain_of_thought", 0.8, "gedankenkette", "gedankenketten?", "Nutze eine Gedankenkette."),
    ("de.think_step_by_step", 0.75, "schritt",
     "(?:denke|denk|denkt|denken sie|überlege|überleg|überlegen sie|lass uns|lasst uns|lassen sie uns)"
     "(?:das|es|darüber)?(?:sorgfältig)?" + _DE_SBS,
     "Denke Schritt für Schritt."),
    ("de.show_reasoning", 0.7, _DE_ANCHORS,
     _DE_SHOW + "(?:deinen|deine|dein|den|die|ihren|ihre|ihr)?(?:detaillierten|ausführlichen)?" + _DE_NOUN,
     "Zeige deinen Gedankengang."),
    ("de.solve_step_by_step", 0.55, "schritt",
     "(?:löse|erkläre|erklär|analysiere|berechne|leite|beweise)(?:das|es|die aufgabe)?(?:her)?" + _DE_SBS,
     "Löse das Schritt für Schritt."),
    ("de.step_by_step", 0.25, "schritt", _DE_SBS + "(?!anleitung)",
     "Gehe schrittweise vor."),
    ("de.explain_why", 0.15, "warum", "erkläre?(?:mir|uns)?(?:kurz)?warum", "Erkläre kurz, warum."),
    # --- Russian
    ("ru.full_reasoning", 0.9, _RU_ANCHORS,
     "(?:полный|полную|полное|весь|всю|подробный|подробное|подробную|детальный|детальное"
     "|развёрнутый|развёрнутое)" + _RU_NOUN,
     "Выведи полный ход рассуждений."),
    ("ru.chain_of_thought", 0.8, "цепочк цепь",
     "(?:цепочк[а-я]{0,2}|цепь)(?:рассуждений|мыслей|размышлений)", "Используй цепочку рассуждений."),
    ("ru.think_step_by_step", 0.75, "шаг пошагов поэтапн последовательн",
     "(?:рассужда|дума|подума|размышля|порассужда|мысл)[а-я]{0,4}" + _RU_SBS, "Рассуждай шаг за шагом."),
    ("ru.show_reasoning", 0.7, _RU_ANCHORS,
     "(?:покажи|опиши|распиши|изложи|объясни|приведи|дай|выведи|напиши)(?:те)?(?:мне)?"
     "(?:свои|своё|свою|весь|все|всю)?" + _RU_NOUN,
     "Покажи ход рассуждений."),
    ("ru.solve_step_by_step", 0.55, "шаг пошагов поэтапн",
     "(?:реши|объясни|разбери|выведи|докажи|распиши|посчитай)[а-я]{0,3}(?:шаг за шагом|пошагово|поэтапно)",
     "Реши это пошагово."),
    ("ru.careful", 0.4, "внимательно тщательно глубоко",
     "(?:подумай|рассуждай|обдумай)(?:те)?(?:очень)?(?:внимательно|тщательно|глубоко)",
     "Подумай внимательно."),
    ("ru.step_by_step", 0.25, "шаг пошагов поэтапн", "шаг за шагом|пошагово|поэтапно",
     "Расскажи шаг за шагом."),
    ("ru.explain_why", 0.15, "почему", "объясни(?:те)?(?:кратко)?почему", "Объясни, почему."),
    # --- Ukrainian
    ("uk.full_reasoning", 0.9, "міркуван роздум думок",
     "(?:повний|весь|увесь|детальний)" + _UK_NOUN, "Покажи весь хід міркувань."),
    ("uk.think_step_by_step", 0.75, "крок покроков поетапн",
     "(?:міркуй|подумай|думай|розмірковуй)[а-яіїєґ]{0,4}(?:крок за кроком|покроково|поетапно)",
     "Міркуй крок за кроком."),
    ("uk.show_reasoning", 0.7, "міркуван роздум думок",
     "(?:покажи|опиши|виклади|поясни|наведи|напиши|розпиши)(?:те)?(?:мені)?(?:свій|свої)?" + _UK_NOUN,
     "Покажи хід міркувань."),
    ("uk.step_by_step", 0.25, "крок покроков",
     "крок за кроком|покроково", "Пояснюй крок за кроком."),
    # --- Arabic
    ("ar.full_reasoning", 0.9, _AR_ANCHORS,
     "(?:كامل|كاملة|جميع|كل)(?:خطوات)?(?:تفكيرك|استدلالك|التفكير|الاستدلال)"
     "|(?:تفكيرك|استدلالك|عملية التفكير)(?:الكامل|الكاملة|بالكامل|بالتفصيل)",
     "اعرض عملية التفكير بالكامل"),
    ("ar.chain_of_thought", 0.8, "سلسلة", "سلسلة (?:الأفكار|التفكير|الاستدلال)", "استخدم سلسلة الأفكار"),
    ("ar.think_step_by_step", 0.75, "خطوةبخطوة",
     "(?:فكر|فكري|فكروا|لنفكر|نفكر|دعنا نفكر|استنتج)(?:في ذلك|بعناية)?خطوة بخطوة", "فكّر خطوة بخطوة"),
    ("ar.show_reasoning", 0.7, _AR_ANCHORS,
     "(?:اشرح|وضح|اعرض|أظهر|بين|اكتب|قدم)(?:لي)?(?:طريقة)?" + _AR_NOUN, "اشرح لي طريقة تفكيرك"),
    ("ar.solve_step_by_step", 0.55, "خطوةبخطوة",
     "(?:حل|اشرح|وضح|حلل)(?:ها|ه|المسألة)?خطوة بخطوة", "حل المسألة خطوة بخطوة"),
    ("ar.step_by_step", 0.25, "خطوةبخطوة", "خطوة بخطوة", "اتبع التعليمات خطوة بخطوة"),
    # --- Turkish, Indonesian, Hindi, Vietnamese
    ("tr.full_reasoning", 0.9, "akıl düşünce düşünme", "(?:tüm|bütün)" + _TR_NOUN,
     "Tüm akıl yürütmeni yaz."),
    ("tr.think_step_by_step", 0.75, "adım",
     "adım adım (?:düşün|akıl yürüt|çöz|açıkla|ilerle)", "Adım adım düşün."),
    ("tr.show_reasoning", 0.7, "akıl düşünce düşünme çözüm",
     _TR_NOUN + "[a-zçğıöşü]{0,5}(?:göster|açıkla|yaz|paylaş)", "Akıl yürütmeni göster."),
    ("tr.step_by_step", 0.25, "adım", "adım adım", "Adım adım anlat."),
    ("id.full_reasoning", 0.9, "penalaran berpikir",
     "(?:seluruh|semua) (?:penalaran|proses berpikir)|(?:penalaran|proses berpikir)(?:secara)? ?lengkap",
     "Tunjukkan seluruh penalaranmu."),
    ("id.think_step_by_step", 0.75, "langkah",
     "(?:pikirkan|berpikirlah|berpikir|bernalar)(?:secara)?langkah (?:demi|per) langkah",
     "Pikirkan langkah demi langkah."),
    ("id.show_reasoning", 0.7, "penalaran berpikir alur jalan",
     "(?:tunjukkan|jelaskan|tuliskan|tampilkan|uraikan)(?:seluruh|semua)?" + _ID_NOUN,
     "Tunjukkan penalaranmu."),
    ("id.step_by_step", 0.25, "langkah", "langkah (?:demi|per) langkah",
     "Jelaskan langkah demi langkah."),
    ("hi.full_reasoning", 0.9, "तर्क प्रक्रिया", "(?:पूरा|पूरी|संपूर्ण)" + _HI_NOUN, "अपना पूरा तर्क दिखाएँ।"),
    ("hi.think_step_by_step", 0.75, "चरण कदम",
     "(?:चरण दर चरण|कदम दर कदम)(?:सोच|विचार|तर्क)", "चरण दर चरण सोचें।"),
    ("hi.show_reasoning", 0.7, "तर्क प्रक्रिया",
     "(?:अपना|अपनी)?" + _HI_NOUN + "(?:दिखा|बता|लिख|समझा)", "अपना तर्क दिखाएँ।"),
    ("hi.step_by_step", 0.25, "चरण कदम", "चरण दर चरण|कदम दर कदम", "चरण दर चरण समझाएँ।"),
    ("vi.think_step_by_step", 0.75, "từng",
     "(?:suy nghĩ|suy luận|lập luận|hãy nghĩ)(?:một cách)?từng bước", "Hãy suy nghĩ từng bước."),
    ("vi.show_reasoning", 0.7, "suy lập",
     "(?:trình bày|thể hiện|nêu rõ|giải thích|cho thấy)(?:toàn bộ|đầy đủ)?" + _VI_NOUN,
     "Trình bày toàn bộ quá trình suy nghĩ."),
    ("vi.step_by_step", 0.25, "từng", "từng bước", "Giải thích từng bước."),
)
# fmt: on


@dataclass(frozen=True, slots=True)
class Cue:
    """One elicitation cue: ``id`` like ``"en.think_step_by_step"``, its language, weight in
    (0, 1], folded anchors, literals every match contains (checked before the regex is run), the
    compiled regex over squeezed text, its longest match, and a natural example."""

    id: str
    lang: str
    weight: float
    anchors: tuple[str, ...]
    required: tuple[str, ...]
    regex: re.Pattern[str]
    width: int  # longest possible match (squeezed characters)
    example: str


def required_literals(pattern: str) -> tuple[str, ...]:
    """Runs (3+ characters) of plain characters at the top level of a folded pattern: every match
    contains them. Conservative: a top-level ``|`` means no requirement at all."""
    runs: list[str] = []
    run: list[str] = []
    depth = 0
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        nxt = pattern[i + 1] if i + 1 < len(pattern) else ""
        plain = depth == 0 and ch not in "()[]|?*+{}\\.^$" and nxt not in ("?", "*", "{")
        if plain:
            run.append(ch)
        else:
            runs.append("".join(run))
            run = []
        if ch == "\\":
            i += 1
        elif ch == "[":
            i = pattern.index("]", i + 1)
        elif ch == "{":
            i = pattern.index("}", i + 1)
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            return ()
        i += 1
    runs.append("".join(run))
    return tuple(r for r in runs if len(r) >= 3)


_MAX_WIDTH = 120


def max_width(pattern: str) -> int:
    """Longest string ``pattern`` can match (capped), from the stdlib regex parser."""
    try:
        import re._parser as sre_parse

        return min(int(sre_parse.parse(pattern).getwidth()[1]), _MAX_WIDTH)
    except Exception:  # a future Python without ``re._parser``: be conservative
        return _MAX_WIDTH


def _build() -> tuple[Cue, ...]:
    cues = []
    for cue_id, weight, anchors, pattern, example in CUE_TABLE:
        folded = _fold_pattern(pattern)
        cues.append(
            Cue(
                id=cue_id,
                lang=cue_id.split(".", 1)[0],
                weight=weight,
                anchors=tuple(_fold_pattern(a) for a in anchors.split()),
                required=required_literals(folded),
                regex=re.compile(folded),
                width=max_width(folded),
                example=example,
            )
        )
    return tuple(cues)


CUES: tuple[Cue, ...] = _build()


# Reasoning tags in the folded (not squeezed) text: <think>, </thinking>, <|reasoning|>, ...
TAG_CUE = Cue(
    id="tag.think",
    lang="und",
    weight=0.85,
    anchors=("<",),
    required=(),
    width=64,
    regex=re.compile(
        r"<\s*/?\s*\|?\s*(?:think|thinking|thoughts?|reasoning|reflection|scratch_?pad|cot|"
        r"inner_monologue|chain_of_thought)\s*\|?\s*>"
    ),
    example="Put your reasoning inside <think></think> tags.",
)
