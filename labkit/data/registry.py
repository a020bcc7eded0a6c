"""The shipped datasets, described column by column.

Figures (rows, columns, class counts) are the documented ones from data/datasets/SOURCES.md; the tests
check every file against them. Units and codings follow each dataset's official description.
"""

from __future__ import annotations

from labkit.data.schema import Feature, FeatureKind, Schema, Task

YES_NO = {"0": "no", "1": "yes"}
F = Feature
CAT: FeatureKind = "categorical"
BIN: FeatureKind = "binary"


def _symptom(name: str, description: str) -> Feature:
    return F(name, name[0].upper() + name[1:], BIN, codes={"No": "no", "Yes": "yes"},
             description=description)


PIMA = Schema(
    name="pima",
    title="Pima Indians diabetes",
    file="pima_diabetes.csv",
    kind="tabular",
    features=(
        F("Pregnancies", "Number of pregnancies", description="times pregnant"),
        F("Glucose", "Plasma glucose 2 h after an oral glucose load", unit="mg/dL", zero_is_missing=True,
          description="2-hour oral glucose tolerance test; >= 200 mg/dL is diagnostic of diabetes (ADA)"),
        F("BloodPressure", "Diastolic blood pressure", unit="mm Hg", zero_is_missing=True),
        F("SkinThickness", "Triceps skinfold thickness", unit="mm", zero_is_missing=True),
        F("Insulin", "Serum insulin 2 h after a glucose load", unit="uU/mL", zero_is_missing=True),
        F("BMI", "Body mass index", unit="kg/m2", zero_is_missing=True,
          description=">= 30 kg/m2 is obesity (WHO)"),
        F("DiabetesPedigreeFunction", "Diabetes pedigree function",
          description="a score of diabetes among relatives, weighted by kinship (Smith et al. 1988)"),
        F("Age", "Age", unit="years"),
    ),
    task=Task(
        target="Outcome", positive=("1",), negative=("0",),
        positive_name="diabetes", negative_name="no diabetes",
        statement="this patient has diabetes",
        why="Outcome 1: diabetes (WHO criteria) diagnosed within five years of the examination "
            "(Smith et al. 1988).",
    ),
    n_rows=768, n_columns=9, class_counts={0: 500, 1: 268},
    source="NIDDK via UCI (withdrawn); Kaggle uciml/pima-indians-diabetes-database; OpenML 37",
    license="Kaggle copy labelled CC0 (original owner NIDDK)",
    citation="Smith J.W. et al. (1988), Using the ADAP learning algorithm to forecast the onset of "
             "diabetes mellitus. Proc. Symp. Comput. Appl. Med. Care, 261-265.",
)

HEART = Schema(
    name="heart",
    title="Heart failure prediction (918 patients, five UCI heart-disease sites)",
    file="heart_failure_prediction_918.csv",
    kind="tabular",
    features=(
        F("Age", "Age", unit="years"),
        F("Sex", "Sex", CAT, codes={"M": "male", "F": "female"}),
        F("ChestPainType", "Chest pain type", CAT, codes={
            "TA": "typical angina", "ATA": "atypical angina", "NAP": "non-anginal pain",
            "ASY": "asymptomatic"}),
        F("RestingBP", "Resting systolic blood pressure", unit="mm Hg", zero_is_missing=True),
        F("Cholesterol", "Serum cholesterol", unit="mg/dL", zero_is_missing=True,
          description="0 in 172 rows (mostly the Swiss site) means not measured"),
        F("FastingBS", "Fasting blood sugar above 120 mg/dL", BIN, codes=YES_NO),
        F("RestingECG", "Resting ECG", CAT, codes={
            "Normal": "normal", "ST": "ST-T wave abnormality",
            "LVH": "probable or definite left ventricular hypertrophy"}),
        F("MaxHR", "Maximum heart rate achieved", unit="beats/min"),
        F("ExerciseAngina", "Exercise-induced angina", BIN, codes={"N": "no", "Y": "yes"}),
        F("Oldpeak", "ST depression induced by exercise relative to rest", unit="mm"),
        F("ST_Slope", "Slope of the peak exercise ST segment", CAT, codes={
            "Up": "upsloping", "Flat": "flat", "Down": "downsloping"}),
    ),
    task=Task(
        target="HeartDisease", positive=("1",), negative=("0",),
        positive_name="heart disease", negative_name="normal",
        statement="this patient has heart disease",
        why="HeartDisease 1: angiographic coronary artery disease (the UCI 'num > 0'), as coded by the "
            "dataset's author (fedesoriano 2021); SERVAL's 'HF' task.",
    ),
    n_rows=918, n_columns=12, class_counts={0: 410, 1: 508},
    source="https://www.kaggle.com/datasets/fedesoriano/heart-failure-prediction",
    license="ODbL 1.0 (as cited by third parties; check on Kaggle)",
    citation="fedesoriano (2021), Heart Failure Prediction Dataset, Kaggle; from Detrano et al. (1989) "
             "and the UCI heart-disease collection.",
)

EARLY_DIABETES = Schema(
    name="early_diabetes",
    title="Early stage diabetes risk (Sylhet diabetes hospital questionnaire)",
    file="early_stage_diabetes_risk.csv",
    kind="tabular",
    features=(
        F("Age", "Age", unit="years"),
        F("Gender", "Sex", CAT, codes={"Male": "male", "Female": "female"}),
        _symptom("Polyuria", "excessive urination, a classic symptom of hyperglycaemia"),
        _symptom("Polydipsia", "excessive thirst, a classic symptom of hyperglycaemia"),
        _symptom("sudden weight loss", "unexplained weight loss"),
        _symptom("weakness", "general weakness"),
        _symptom("Polyphagia", "excessive hunger"),
        _symptom("Genital thrush", "genital candidiasis"),
        _symptom("visual blurring", "blurred vision"),
        _symptom("Itching", "itching"),
        _symptom("Irritability", "irritability"),
        _symptom("delayed healing", "slow wound healing"),
        _symptom("partial paresis", "partial loss of muscle strength"),
        _symptom("muscle stiffness", "muscle stiffness"),
        _symptom("Alopecia", "hair loss"),
        _symptom("Obesity", "obesity"),
    ),
    task=Task(
        target="class", positive=("Positive",), negative=("Negative",),
        positive_name="diabetes", negative_name="no diabetes",
        statement="this patient has diabetes",
        why="class Positive: diabetes confirmed by a physician (Islam et al. 2020).",
    ),
    n_rows=520, n_columns=17, class_counts={0: 200, 1: 320},
    source="https://archive.ics.uci.edu/dataset/529/early+stage+diabetes+risk+prediction+dataset",
    license="CC BY 4.0",
    citation="Islam M.M.F. et al. (2020), Likelihood prediction of diabetes at early stage using data "
             "mining techniques. Computer Vision and Machine Intelligence in Medical Image Analysis.",
)

ILPD = Schema(
    name="ilpd",
    title="Indian liver patient dataset (ILPD)",
    file="ilpd_indian_liver_patient.csv",
    kind="tabular",
    features=(
        F("Age", "Age", unit="years"),
        F("Gender", "Sex", CAT, codes={"Male": "male", "Female": "female"}),
        F("TB", "Total bilirubin", unit="mg/dL", description="reference about 0.1-1.2 mg/dL"),
        F("DB", "Direct bilirubin", unit="mg/dL", description="reference below about 0.3 mg/dL"),
        F("Alkphos", "Alkaline phosphatase", unit="IU/L", description="reference about 44-147 IU/L"),
        F("Sgpt", "Alanine aminotransferase (ALT, SGPT)", unit="IU/L",
          description="reference about 7-56 IU/L"),
        F("Sgot", "Aspartate aminotransferase (AST, SGOT)", unit="IU/L",
          description="reference about 10-40 IU/L"),
        F("TP", "Total proteins", unit="g/dL", description="reference about 6.0-8.3 g/dL"),
        F("ALB", "Albumin", unit="g/dL", description="reference about 3.5-5.0 g/dL"),
        F("AG_Ratio", "Albumin/globulin ratio", description="reference about 1.1-2.5; 4 rows missing"),
    ),
    task=Task(
        target="Selector", positive=("1",), negative=("2",),
        positive_name="liver patient", negative_name="not a liver patient",
        statement="this patient has liver disease",
        why="Selector 1: liver patient, 2: non-liver patient (Ramana et al. 2012, UCI description).",
    ),
    n_rows=583, n_columns=11, class_counts={0: 167, 1: 416},
    source="https://archive.ics.uci.edu/dataset/225/ilpd+indian+liver+patient+dataset",
    license="CC BY 4.0",
    citation="Ramana B.V., Babu M.S.P., Venkateswarlu N.B. (2012), ILPD (Indian Liver Patient Dataset), "
             "UCI Machine Learning Repository.",
)

HCV = Schema(
    name="hcv",
    title="Hepatitis C virus (HCV) laboratory data",
    file="hcv_data.csv",
    kind="tabular",
    features=(
        F("Age", "Age", unit="years"),
        F("Sex", "Sex", CAT, codes={"m": "male", "f": "female"}),
        F("ALB", "Albumin", unit="g/L", description="reference about 35-52 g/L"),
        F("ALP", "Alkaline phosphatase", unit="U/L", description="reference about 40-130 U/L"),
        F("ALT", "Alanine aminotransferase", unit="U/L", description="reference below about 45 U/L"),
        F("AST", "Aspartate aminotransferase", unit="U/L", description="reference below about 35 U/L"),
        F("BIL", "Bilirubin", unit="umol/L", description="reference below about 21 umol/L"),
        F("CHE", "Cholinesterase", unit="kU/L", description="reference about 5.3-12.9 kU/L"),
        F("CHOL", "Cholesterol", unit="mmol/L"),
        F("CREA", "Creatinine", unit="umol/L"),
        F("GGT", "Gamma-glutamyl transferase", unit="U/L", description="reference below about 60 U/L"),
        F("PROT", "Total protein", unit="g/L", description="reference about 66-83 g/L"),
    ),
    task=Task(
        target="Category", positive=("1=Hepatitis", "2=Fibrosis", "3=Cirrhosis"),
        negative=("0=Blood Donor",), excluded=("0s=suspect Blood Donor",),
        positive_name="hepatitis C (hepatitis, fibrosis or cirrhosis)", negative_name="blood donor",
        statement="this patient has hepatitis C liver disease",
        why="Donors vs hepatitis C patients at any stage (hepatitis, fibrosis, cirrhosis), as in "
            "Hoffmann et al. (2018). The 7 'suspect blood donors' are neither confirmed healthy nor "
            "diagnosed, so they are left out (608 rows remain).",
    ),
    n_rows=615, n_columns=14, class_counts={0: 533, 1: 75},
    drop=("id",),
    source="https://archive.ics.uci.edu/dataset/571/hcv+data",
    license="CC BY 4.0",
    citation="Hoffmann G. et al. (2018), Using machine learning techniques to generate laboratory "
             "diagnostic pathways - a case study. J Lab Precis Med 3:58.",
)

CLEVELAND = Schema(
    name="cleveland",
    title="Cleveland heart disease (UCI)",
    file="cleveland_heart_disease.csv",
    kind="tabular",
    features=(
        F("age", "Age", unit="years"),
        F("sex", "Sex", CAT, codes={"1": "male", "0": "female"}),
        F("cp", "Chest pain type", CAT, codes={
            "1": "typical angina", "2": "atypical angina", "3": "non-anginal pain",
            "4": "asymptomatic"}),
        F("trestbps", "Resting systolic blood pressure", unit="mm Hg"),
        F("chol", "Serum cholesterol", unit="mg/dL"),
        F("fbs", "Fasting blood sugar above 120 mg/dL", BIN, codes=YES_NO),
        F("restecg", "Resting ECG", CAT, codes={
            "0": "normal", "1": "ST-T wave abnormality",
            "2": "probable or definite left ventricular hypertrophy"}),
        F("thalach", "Maximum heart rate achieved", unit="beats/min"),
        F("exang", "Exercise-induced angina", BIN, codes=YES_NO),
        F("oldpeak", "ST depression induced by exercise relative to rest", unit="mm"),
        F("slope", "Slope of the peak exercise ST segment", CAT, codes={
            "1": "upsloping", "2": "flat", "3": "downsloping"}),
        F("ca", "Number of major vessels coloured by fluoroscopy", description="0-3; 4 rows missing"),
        F("thal", "Thallium stress test", CAT, codes={
            "3": "normal", "6": "fixed defect", "7": "reversible defect"}),
    ),
    task=Task(
        target="num", positive=("1", "2", "3", "4"), negative=("0",),
        positive_name="coronary artery disease", negative_name="no disease",
        statement="this patient has coronary artery disease",
        why="num > 0: more than 50% diameter narrowing in any major vessel (Detrano et al. 1989); the "
            "usual binarization of the UCI description.",
    ),
    n_rows=303, n_columns=14, class_counts={0: 164, 1: 139},
    source="https://archive.ics.uci.edu/dataset/45/heart+disease",
    license="CC BY 4.0",
    citation="Detrano R. et al. (1989), International application of a new probability algorithm for "
             "the diagnosis of coronary artery disease. Am J Cardiol 64:304-310.",
)

HEART_FAILURE = Schema(
    name="heart_failure",
    title="Heart failure clinical records (death during follow-up)",
    file="heart_failure_clinical_records.csv",
    kind="tabular",
    features=(
        F("age", "Age", unit="years"),
        F("anaemia", "Anaemia", BIN, codes=YES_NO, description="decrease of haemoglobin"),
        F("creatinine_phosphokinase", "Creatine phosphokinase (CPK)", unit="mcg/L"),
        F("diabetes", "Diabetes", BIN, codes=YES_NO),
        F("ejection_fraction", "Left ventricular ejection fraction", unit="%",
          description="below 40% is reduced ejection fraction"),
        F("high_blood_pressure", "Hypertension", BIN, codes=YES_NO),
        F("platelets", "Platelets", unit="platelets/mL"),
        F("serum_creatinine", "Serum creatinine", unit="mg/dL"),
        F("serum_sodium", "Serum sodium", unit="mEq/L", description="below 135 mEq/L is hyponatraemia"),
        F("sex", "Sex", CAT, codes={"1": "male", "0": "female"}),
        F("smoking", "Smoker", BIN, codes=YES_NO),
    ),
    task=Task(
        target="DEATH_EVENT", positive=("1",), negative=("0",),
        positive_name="died during follow-up", negative_name="survived follow-up",
        statement="this heart failure patient dies during the follow-up period",
        why="DEATH_EVENT 1: the patient died during follow-up (Ahmad et al. 2017). The column 'time' "
            "(follow-up length) is known only once the outcome is, so it is left out as a feature.",
    ),
    n_rows=299, n_columns=13, class_counts={0: 203, 1: 96},
    drop=("time",),
    source="https://archive.ics.uci.edu/dataset/519/heart+failure+clinical+records",
    license="CC BY 4.0",
    citation="Chicco D., Jurman G. (2020), BMC Med Inform Decis Mak 20:16; Ahmad T. et al. (2017), "
             "PLoS ONE 12(7): e0181001.",
)

THYROID = Schema(
    name="thyroid",
    title="New thyroid (thyroid gland function)",
    file="new_thyroid.csv",
    kind="tabular",
    features=(
        F("T3_resin", "T3-resin uptake", unit="%"),
        F("T4_total", "Total serum thyroxin", unit="ug/dL"),
        F("T3_total", "Total serum triiodothyronine", unit="ng/mL"),
        F("TSH", "Basal thyroid-stimulating hormone", unit="mU/L"),
        F("TSH_delta", "TSH rise after 200 ug of thyrotropin-releasing hormone", unit="mU/L"),
    ),
    task=Task(
        target="Class", positive=("2", "3"), negative=("1",),
        positive_name="thyroid dysfunction (hyper- or hypothyroidism)", negative_name="euthyroid",
        statement="this patient has a thyroid dysfunction",
        why="Class 2 (hyperthyroidism) and 3 (hypothyroidism) against 1 (normal), Coomans et al. (1983).",
    ),
    n_rows=215, n_columns=6, class_counts={0: 150, 1: 65},
    source="https://archive.ics.uci.edu/dataset/102/thyroid+disease (new-thyroid)",
    license="CC BY 4.0",
    citation="Coomans D. et al. (1983), Comparison of multivariate discrimination techniques for "
             "clinical data: application to the thyroid functional state. Methods Inf Med 22:93-101.",
)

_CELL = ["radius", "texture", "perimeter", "area", "smoothness", "compactness", "concavity",
         "concave points", "symmetry", "fractal dimension"]
BREAST_CANCER = Schema(
    name="breast_cancer",
    title="Breast cancer Wisconsin (diagnostic), cell nuclei from fine-needle aspirates",
    file="breast_cancer_wisconsin_diagnostic.csv",
    kind="tabular",
    features=tuple(
        F(f"{stat} {cell}" if stat != "error" else f"{cell} error",
          f"{'Standard error of the' if stat == 'error' else stat.capitalize()} nucleus {cell}",
          description=f"{stat} over the nuclei in the image")
        for stat in ("mean", "error", "worst") for cell in _CELL
    ),
    task=Task(
        target="target", positive=("0",), negative=("1",),
        positive_name="malignant", negative_name="benign",
        statement="this breast mass is malignant",
        why="target 0 is malignant, 1 benign (scikit-learn's coding); the clinically relevant positive "
            "class is malignant.",
    ),
    n_rows=569, n_columns=31, class_counts={0: 357, 1: 212},
    source="https://archive.ics.uci.edu/dataset/17/breast+cancer+wisconsin+diagnostic",
    license="CC BY 4.0 (scikit-learn code BSD-3)",
    citation="Street W.N., Wolberg W.H., Mangasarian O.L. (1993), Nuclear feature extraction for breast "
             "tumor diagnosis. Proc. SPIE 1905.",
)

CIRRHOSIS = Schema(
    name="cirrhosis",
    title="Primary biliary cirrhosis (Mayo Clinic trial)",
    file="cirrhosis_pbc_mayo.csv",
    kind="tabular",
    features=(
        F("trt", "Treatment", CAT, codes={"1": "D-penicillamine", "2": "placebo"},
          description="missing for the 106 patients not in the trial"),
        F("age", "Age", unit="years"),
        F("sex", "Sex", CAT, codes={"m": "male", "f": "female"}),
        F("ascites", "Ascites", BIN, codes=YES_NO),
        F("hepato", "Hepatomegaly", BIN, codes=YES_NO),
        F("spiders", "Spider angiomas", BIN, codes=YES_NO),
        F("edema", "Oedema", CAT, codes={
            "0": "none", "0.5": "untreated or resolved by diuretics", "1": "despite diuretics"}),
        F("bili", "Serum bilirubin", unit="mg/dL"),
        F("chol", "Serum cholesterol", unit="mg/dL"),
        F("albumin", "Serum albumin", unit="g/dL"),
        F("copper", "Urine copper", unit="ug/day"),
        F("alk.phos", "Alkaline phosphatase", unit="U/L"),
        F("ast", "Aspartate aminotransferase (SGOT)", unit="U/mL"),
        F("trig", "Triglycerides", unit="mg/dL"),
        F("platelet", "Platelet count", unit="x1000/uL"),
        F("protime", "Prothrombin time", unit="s"),
        F("stage", "Histologic stage", CAT, codes={"1": "1", "2": "2", "3": "3", "4": "4"}),
    ),
    task=Task(
        target="status", positive=("2",), negative=("0", "1"),
        positive_name="died", negative_name="alive (censored or transplanted)",
        statement="this patient with primary biliary cirrhosis dies during follow-up",
        why="status 2: death; 0 (censored) and 1 (transplant) are alive at the end of follow-up "
            "(Fleming & Harrington 1991). 'time' is the follow-up length, known only with the outcome, "
            "so it is left out as a feature.",
    ),
    n_rows=418, n_columns=20, class_counts={0: 257, 1: 161},
    drop=("id", "time"),
    source="Mayo PBC (Fleming & Harrington); R survival::pbc; UCI dataset 878",
    license="R 'survival' is LGPL (>=2); UCI copy CC BY 4.0",
    citation="Fleming T.R., Harrington D.P. (1991), Counting Processes and Survival Analysis. Wiley.",
)

ABSTRACTS = Schema(
    name="abstracts",
    title="Medical abstracts: is this abstract about a neoplasm?",
    file="text/medical_tc_test.csv",
    kind="text",
    features=(F("text", "Abstract", "text", description="title and abstract of a PubMed article"),),
    task=Task(
        target="condition_label", positive=("1",), negative=("2", "3", "4", "5"),
        positive_name="neoplasms", negative_name="other conditions",
        statement="this medical abstract is about a neoplasm",
        why="condition_label 1 is 'neoplasms'; 2-5 are digestive, nervous, cardiovascular and general "
            "pathological conditions (Schopf et al. 2022).",
    ),
    n_rows=2888, n_columns=2, class_counts={0: 2255, 1: 633},
    rename={"medical_abstract": "text"},
    source="https://github.com/sebischair/Medical-Abstracts-TC-Corpus (test split)",
    license="CC BY-SA 3.0 (data/datasets/text/medical_tc_LICENSE.txt)",
    citation="Schopf T., Braun D., Matthes F. (2022), Evaluating unsupervised text classification: "
             "zero-shot and similarity-based approaches. NLPIR 2022.",
)

SCHEMAS: dict[str, Schema] = {s.name: s for s in (
    HEART, EARLY_DIABETES, ILPD, HCV, PIMA,
    CLEVELAND, HEART_FAILURE, THYROID, BREAST_CANCER, CIRRHOSIS, ABSTRACTS,
)}
