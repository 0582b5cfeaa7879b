"""Specialty and difficulty labels from documented, deterministic features.

Records that already carry a label (the built-in corpus, generic files with ``specialty`` /
``difficulty`` columns) keep it; only missing labels are filled.

**Specialty** (one of :data:`SPECIALTIES`):
1. the dataset's own subject label when it maps to a specialty (:data:`SUBJECT_SPECIALTY`:
   MedMCQA ``Dental`` → dentistry, MMLU ``virology`` → infectious_disease, MedQuAD ``GHR``
   → genetics, ...);
2. otherwise keyword lexicons (:data:`LEXICONS`; ``stem*`` matches any word starting with it,
   other entries whole words) scored over the distinct normalized words of each field: 2 points
   per hit in the question
   (instruction, and the input of open-ended items, where instruction datasets put the user's
   question), 1 per hit in the response and in the first 300 words of other contexts; the
   highest score wins, ties go to the earlier specialty in :data:`SPECIALTIES`; a best score
   under 2 gives ``general``.

**Difficulty** (:data:`DIFFICULTY_STAGES`, the four curriculum stages), from the *question
text* (MCQ: the stem without options; open items: instruction + input, where instruction
datasets put the user's question; PubMedQA/COVID-QA contexts are not questions); first rule wins:
4. treatment planning — treatment/management cues (``treat*``, ``management``, ``therapy``,
   ``drug of choice``, ``next step``, ``first-line``, ``dose``, ``medication`` ...);
3. differential diagnosis — diagnostic cues (``diagnos*``, ``differential``, ``most likely
   cause``, ``distinguish`` ...) or a clinical vignette (``a 45-year-old ...``, ``presents with``,
   ``comes to the``, ``brought to``);
1. basic anatomy — basic-science cues (``innervat*``, ``blood supply``, ``located``,
   ``embryolog*``, ``histolog*``, ``function of``, ``which nerve`` ...) or a basic-science subject
   (MedMCQA Anatomy/Physiology/Biochemistry, MMLU anatomy/college_biology ...);
2. clinical knowledge — everything else (symptoms, causes, tests, outlook, mechanisms).

Test: ``pytest tests/data/test_tagging.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from distillm_edge.data.records import SPECIALTIES, Record

LEXICONS: dict[str, str] = {
    "cardiology": "cardi* heart myocard* coronar* arrhythm* atrial ventricular angina hypertens* hypotens* infarct* "
    "aort* valv* mitral tricuspid endocard* pericard* tachycard* bradycard* statin* atheroscler* murmur* ecg ekg "
    "electrocardiogra* cholesterol lipid* palpitation* fibrillation pulse pulseless",
    "pulmonology": "lung* pulmon* asthma* copd bronch* pneumon* respirat* alveol* pleura* trache* emphysema "
    "spirometr* inhal* dyspnea dyspnoea apnea apnoea wheez* cough* sarcoid* ards",
    "gastroenterology": "gastr* intestin* bowel* colon colonic colitis crohn* hepat* liver cirrho* pancrea* esophag* "
    "oesophag* stomach duoden* ileum jejun* rectal rectum biliary gallbladder gallstone* cholecyst* diarrh* "
    "constipat* dyspeps* peptic celiac coeliac gerd reflux jaundice vomit* nause* hernia* appendic* endoscop* "
    "colonoscop* ibs ibd bilirubin abdom*",
    "nephrology": "kidney* renal nephr* glomerul* dialys* urin* bladder ureter* urethr* prostat* proteinuria "
    "hematuria haematuria creatinine electrolyte* hyperkal* hypokal* hyponatr* hypernatr* ckd aki uti "
    "incontinen* cystitis",
    "endocrinology": "diabet* insulin* thyroid* hypothyroid* hyperthyroid* glucose glycem* glycaem* hba1c adrenal* "
    "cortisol pituitar* hormon* endocrin* cushing* addison* obes* metformin parathyroid* goiter goitre graves "
    "prolactin* testosterone ketoacidosis dka tsh",
    "neurology": "neurolog* neuron* neuropath* brain stroke seizure* epilep* migraine* headache* dementia alzheimer* "
    "parkinson* mening* cerebr* spinal nerve nerves paralys* palsy ataxia tremor* aphasia concussion encephal* "
    "myasthenia cranial guillain tia eeg hemipleg* paresthes* sclerosis",
    "psychiatry": "psychiatr* depress* anxiety anxious schizophren* bipolar mania manic psychos* psychotic suicid* "
    "ptsd ocd adhd autism autistic antidepress* antipsychot* panic phobia* insomnia addict* alcohol* substance "
    "anorexia bulimi* mental mood personality hallucinat* delusion* ssri ssris lithium psychotherap*",
    "infectious_disease": "infect* bacteri* viral virus* virolog* antibiot* sepsis septic hiv aids tubercul* malaria* "
    "tb vaccin* immuniz* immunis* covid* coronavirus* sars mers influenza flu pathogen* microb* fung* parasit* "
    "streptococ* staphylococ* mrsa measles mumps syphilis gonorr* chlamydia herpes zoster ebola dengue cholera "
    "typhoid lyme rabies antiviral* antifungal* epidemi* pandemic* transmission quarantin* outbreak* pneumococ*",
    "oncology": "cancer* tumor* tumour* malignan* carcinom* lymphoma* leukemi* leukaemi* melanoma* sarcoma* "
    "metasta* chemotherap* oncolog* neoplas* radiotherap* myeloma* glioma* glioblastoma* adenocarcinom* "
    "mastectom* mammogra* biops*",
    "hematology": "anemi* anaemi* hemoglobin* haemoglobin* platelet* thrombocyt* coagul* clot clots clotting "
    "hemophil* haemophil* sickle thalassemi* thalassaemi* leukocyt* neutrop* bleeding hemorrhag* haemorrhag* "
    "thrombo* transfusion* iron ferritin warfarin heparin anticoagul* erythrocyt* lymphocyt* marrow hematolog* "
    "haematolog* polycythemi* dvt embol* inr rbc wbc spleen splen*",
    "pediatrics": "child* infant* newborn* neonat* pediatr* paediatr* toddler* baby babies adolescen* boy girl "
    "kawasaki croup bronchiolitis",
    "obstetrics_gynecology": "pregnan* obstet* gynec* gynaec* uter* ovar* cervix menstru* menopaus* placent* fetal "
    "fetus foetus preeclampsia eclampsia gestation* trimester* contracept* endometri* vagin* vulv* breastfeed* "
    "lactat* cesarean caesarean postpartum antenatal prenatal miscarriage infertil* ivf pcos amenorrh* "
    "dysmenorrh* estrogen oestrogen progesteron* hysterectom*",
    "dermatology": "skin derma* rash* eczema psoria* acne urticaria hives pruritus itch* wart warts blister* "
    "alopecia vitiligo mole moles keratos* sunburn* scabies impetigo cellulitis rosacea epiderm* cutaneous",
    "musculoskeletal": "bone bones fractur* joint joints arthrit* osteo* muscl* musculoskeletal tendon* ligament* "
    "cartilage spine vertebr* orthop* rheumat* gout lupus sle knee* hip hips shoulder* ankle* wrist* elbow* "
    "sprain* scoliosis fibromyalgia carpal tendin* bursitis myopath* skelet*",
    "ophthalmology": "eye eyes eyelid* ocular ophthalm* retina* retinopath* glaucoma cataract* vision visual blind* "
    "cornea* conjunctiv* macular uveitis intraocular myopia strabismus optic",
    "otolaryngology": "ear ears hearing deaf* tinnitus otitis sinus sinuses sinusitis nasal nose throat tonsil* "
    "pharyn* laryn* vertigo cochlea* adenoid* epistaxis rhinitis ent vocal audiolog* mastoid*",
    "pharmacology": "drug drugs medication* dose doses dosage* pharmac* adverse contraindicat* agonist* antagonist* "
    "inhibitor* toxicity overdose* pharmacokinet* bioavailab* prescri* tablet* capsule*",
    "emergency_medicine": "emergency trauma* resuscitat* cpr shock anaphyla* poisoning poison* burn burns injur* "
    "accident* choking drowning heatstroke hypotherm* triage ambulance unconscious* arrest",
    "genetics": "gene genes genetic* chromosom* mutat* inherit* hereditar* autosomal recessive dominant dna genom* "
    "allele* trisomy karyotyp* heterozyg* homozyg* genotyp* phenotyp*",
    "dentistry": "dental dentist* tooth teeth caries gingiv* periodont* enamel dentin* molar molars incisor* "
    "gum gums orthodont* pulp pulpal pulpitis maxilla* mandib* endodont* prosthodont* denture* occlus* cementum premolar*",
}

SUBJECT_SPECIALTY: dict[str, str] = {
    # MedMCQA subject_name
    "dental": "dentistry",
    "pharmacology": "pharmacology",
    "pediatrics": "pediatrics",
    "gynaecology & obstetrics": "obstetrics_gynecology",
    "microbiology": "infectious_disease",
    "ophthalmology": "ophthalmology",
    "ent": "otolaryngology",
    "skin": "dermatology",
    "psychiatry": "psychiatry",
    "orthopaedics": "musculoskeletal",
    # MMLU subjects
    "virology": "infectious_disease",
    "medical_genetics": "genetics",
    # MedQuAD sites
    "ghr": "genetics",
    "cancergov": "oncology",
}

BASIC_SUBJECTS = frozenset(
    {"anatomy", "physiology", "biochemistry", "college_biology", "histology", "embryology"}
)

TREATMENT = re.compile(
    r"\b(treat|treats|treated|treating|treatment|treatments|therapy|therapies|therapeutic|manage|managed|managing|"
    r"management|drug of choice|first[- ]line|next (best )?step|prescrib\w*|dose|doses|dosing|dosage|regimen|"
    r"medication|medications|should be (given|started|administered)|was given|is given|surgery|surgical)\b"
)
DIAGNOSIS = re.compile(
    r"\b(diagnos\w*|differential|most likely (cause|diagnosis|explanation|underlying|etiology|finding)|"
    r"distinguish\w*|differentiat\w*|rule out|likely to (be found|show|reveal)|work[- ]?up)\b"
)
VIGNETTE = re.compile(r"\b\d+[- ]?(year|month|week|day)s?[- ]old\b|\bpresents (to|with)\b|\bcomes to\b|\bbrought to\b")
BASIC = re.compile(
    r"\b(anatom\w*|innervat\w*|nerve supply|blood supply|arterial supply|venous drainage|lymphatic drainage|"
    r"located|origin of|insertion of|embryolog\w*|develops? from|derived from|histolog\w*|epitheli\w*|"
    r"physiolog\w*|normal (value|range|function)|function of|functions of|role of|composed of|consists of|"
    r"structure of|which (bone|muscle|nerve|artery|vein|organ|structure|cell|gland|enzyme|hormone|layer)|"
    r"secreted by|produced by|synthesi[sz]ed)\b"
)

_EXACT: dict[str, tuple[int, ...]] = {}
_STEMS: dict[str, list[tuple[str, int]]] = {}
for _index, _name in enumerate(SPECIALTIES):
    for _entry in LEXICONS.get(_name, "").split():
        if _entry.endswith("*"):
            _STEMS.setdefault(_entry[:3], []).append((_entry[:-1], _index))
        else:
            _EXACT[_entry] = (*_EXACT.get(_entry, ()), _index)
_CACHE: dict[str, tuple[int, ...]] = {}
_GENERAL = SPECIALTIES.index("general")


def word_specialties(word: str) -> tuple[int, ...]:
    """Indices (into SPECIALTIES) of the lexicons a normalized word belongs to."""
    hit = _CACHE.get(word)
    if hit is None:
        found = set(_EXACT.get(word, ()))
        found.update(i for stem, i in _STEMS.get(word[:3], ()) if word.startswith(stem))
        hit = tuple(sorted(found))
        _CACHE[word] = hit
    return hit


def specialty_of(record: Record) -> str:
    hint = SUBJECT_SPECIALTY.get(record.subject.strip().lower())
    if hint:
        return hint
    if len(_CACHE) > 500_000:  # bound the memo (only between records: the loop below relies on it)
        _CACHE.clear()
    instruction, context, response = record.match()
    context_weight = 2 if record.kind == "open" else 1  # open items: the input is the user's question
    scores = [0] * len(SPECIALTIES)
    for words, weight in ((instruction, 2), (response, 1), (context[:300], context_weight)):
        distinct = set(words)
        for word in distinct.difference(_CACHE):  # (a dict argument: iterates `distinct`, not the memo)
            word_specialties(word)
        for hit in filter(None, map(_CACHE.__getitem__, distinct)):
            for i in hit:
                scores[i] += weight
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return SPECIALTIES[best] if scores[best] >= 2 else SPECIALTIES[_GENERAL]


def question_text(record: Record) -> str:
    """The text difficulty is judged on (see the module docstring)."""
    if record.kind == "mcq":
        return record.bare_question()
    if record.kind == "open" and record.input:
        return f"{record.instruction}\n{record.input[:2000]}"
    return record.instruction


def difficulty_of(record: Record) -> int:
    text = question_text(record).lower()
    if TREATMENT.search(text):
        return 4
    if DIAGNOSIS.search(text) or VIGNETTE.search(text):
        return 3
    if record.subject.strip().lower() in BASIC_SUBJECTS or BASIC.search(text):
        return 1
    return 2


def tag(records: Iterable[Record]) -> Iterator[Record]:
    """Fill missing specialty/difficulty labels (labels already present are kept)."""
    for record in records:
        if not record.specialty:
            record.specialty = specialty_of(record)
        if not record.difficulty:
            record.difficulty = difficulty_of(record)
        yield record
