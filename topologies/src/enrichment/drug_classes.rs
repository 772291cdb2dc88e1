//! The therapeutic classes and generic drugs the reference-data generator draws from.
//!
//! Generic and brand names, classes and DEA schedules are real; GPI digits past the class
//! prefix, NDCs, manufacturers and prices are synthetic (plausible in size, not actual).

use super::reference::DeaSchedule;

pub(super) struct DrugClass {
    pub name: &'static str,
    /// The GPI's first four digits (group and class).
    pub gpi_prefix: &'static str,
    /// Average wholesale price per unit, US dollars: a generic's range; a brand costs
    /// several times more.
    pub unit_price: (f64, f64),
    /// Covered through the specialty benefit (tier 5, prior authorization).
    pub specialty: bool,
    pub generics: &'static [Generic],
}

pub(super) struct Generic {
    pub name: &'static str,
    pub brand: &'static str,
    pub schedule: Option<DeaSchedule>,
}

const fn g(name: &'static str, brand: &'static str) -> Generic {
    Generic {
        name,
        brand,
        schedule: None,
    }
}

const fn c(name: &'static str, brand: &'static str, schedule: DeaSchedule) -> Generic {
    Generic {
        name,
        brand,
        schedule: Some(schedule),
    }
}

const fn class(
    name: &'static str,
    gpi_prefix: &'static str,
    unit_price: (f64, f64),
    generics: &'static [Generic],
) -> DrugClass {
    DrugClass {
        name,
        gpi_prefix,
        unit_price,
        specialty: false,
        generics,
    }
}

use DeaSchedule::{C2, C3, C4, C5};

pub(super) const CLASSES: &[DrugClass] = &[
    class(
        "HMG-CoA Reductase Inhibitors",
        "3940",
        (0.05, 0.60),
        &[
            g("Atorvastatin Calcium", "Lipitor"),
            g("Simvastatin", "Zocor"),
            g("Rosuvastatin Calcium", "Crestor"),
            g("Pravastatin Sodium", "Pravachol"),
            g("Lovastatin", "Mevacor"),
        ],
    ),
    class(
        "ACE Inhibitors",
        "3610",
        (0.04, 0.40),
        &[
            g("Lisinopril", "Zestril"),
            g("Enalapril Maleate", "Vasotec"),
            g("Ramipril", "Altace"),
            g("Benazepril Hydrochloride", "Lotensin"),
        ],
    ),
    class(
        "Angiotensin II Receptor Antagonists",
        "3615",
        (0.08, 0.90),
        &[
            g("Losartan Potassium", "Cozaar"),
            g("Valsartan", "Diovan"),
            g("Irbesartan", "Avapro"),
            g("Olmesartan Medoxomil", "Benicar"),
        ],
    ),
    class(
        "Calcium Channel Blockers",
        "3400",
        (0.04, 0.70),
        &[
            g("Amlodipine Besylate", "Norvasc"),
            g("Diltiazem Hydrochloride", "Cardizem"),
            g("Nifedipine", "Procardia XL"),
        ],
    ),
    class(
        "Beta Blockers",
        "3310",
        (0.05, 0.80),
        &[
            g("Metoprolol Succinate", "Toprol XL"),
            g("Carvedilol", "Coreg"),
            g("Atenolol", "Tenormin"),
        ],
    ),
    class(
        "Thiazide Diuretics",
        "3720",
        (0.03, 0.30),
        &[
            g("Hydrochlorothiazide", "Microzide"),
            g("Chlorthalidone", "Thalitone"),
        ],
    ),
    class(
        "Biguanides",
        "2725",
        (0.03, 0.35),
        &[g("Metformin Hydrochloride", "Glucophage")],
    ),
    class(
        "Insulins",
        "2710",
        (18.0, 45.0),
        &[
            g("Insulin Glargine", "Lantus"),
            g("Insulin Lispro", "Humalog"),
            g("Insulin Aspart", "Novolog"),
        ],
    ),
    class(
        "GLP-1 Receptor Agonists",
        "2717",
        (250.0, 1_100.0),
        &[
            g("Semaglutide", "Ozempic"),
            g("Dulaglutide", "Trulicity"),
            g("Liraglutide", "Victoza"),
        ],
    ),
    class(
        "Thyroid Hormones",
        "2810",
        (0.10, 0.90),
        &[
            g("Levothyroxine Sodium", "Synthroid"),
            g("Liothyronine Sodium", "Cytomel"),
        ],
    ),
    class(
        "Aminopenicillins",
        "0120",
        (0.10, 1.20),
        &[
            g("Amoxicillin", "Amoxil"),
            g("Amoxicillin-Clavulanate Potassium", "Augmentin"),
            g("Ampicillin", "Principen"),
        ],
    ),
    class(
        "Macrolides",
        "0300",
        (0.50, 6.00),
        &[
            g("Azithromycin", "Zithromax"),
            g("Clarithromycin", "Biaxin"),
        ],
    ),
    class(
        "Proton Pump Inhibitors",
        "4927",
        (0.08, 1.50),
        &[
            g("Omeprazole", "Prilosec"),
            g("Pantoprazole Sodium", "Protonix"),
            g("Esomeprazole Magnesium", "Nexium"),
            g("Lansoprazole", "Prevacid"),
        ],
    ),
    class(
        "Selective Serotonin Reuptake Inhibitors",
        "5816",
        (0.05, 1.00),
        &[
            g("Sertraline Hydrochloride", "Zoloft"),
            g("Fluoxetine Hydrochloride", "Prozac"),
            g("Escitalopram Oxalate", "Lexapro"),
            g("Citalopram Hydrobromide", "Celexa"),
            g("Paroxetine Hydrochloride", "Paxil"),
        ],
    ),
    class(
        "Anticonvulsants",
        "7260",
        (0.06, 2.50),
        &[
            g("Gabapentin", "Neurontin"),
            c("Pregabalin", "Lyrica", C5),
            g("Lamotrigine", "Lamictal"),
            g("Levetiracetam", "Keppra"),
        ],
    ),
    class(
        "Beta Adrenergic Agonists",
        "4420",
        (25.0, 75.0),
        &[
            g("Albuterol Sulfate HFA", "ProAir HFA"),
            g("Levalbuterol Tartrate HFA", "Xopenex HFA"),
        ],
    ),
    class(
        "Opioid Agonists",
        "6510",
        (0.20, 4.00),
        &[
            c("Oxycodone Hydrochloride", "Roxicodone", C2),
            c("Hydrocodone Bitartrate-Acetaminophen", "Norco", C2),
            c("Morphine Sulfate ER", "MS Contin", C2),
            c("Tramadol Hydrochloride", "Ultram", C4),
        ],
    ),
    class(
        "Opioid Partial Agonists",
        "6520",
        (3.00, 12.0),
        &[c("Buprenorphine-Naloxone", "Suboxone", C3)],
    ),
    class(
        "Benzodiazepines",
        "5710",
        (0.04, 0.80),
        &[
            c("Alprazolam", "Xanax", C4),
            c("Lorazepam", "Ativan", C4),
            c("Clonazepam", "Klonopin", C4),
            c("Diazepam", "Valium", C4),
        ],
    ),
    class(
        "Sedative Hypnotics",
        "6020",
        (0.10, 1.50),
        &[c("Zolpidem Tartrate", "Ambien", C4)],
    ),
    class(
        "ADHD Stimulants",
        "6140",
        (0.50, 9.00),
        &[
            c("Methylphenidate Hydrochloride", "Ritalin", C2),
            c("Amphetamine-Dextroamphetamine", "Adderall", C2),
        ],
    ),
    class(
        "Androgens",
        "2310",
        (4.00, 15.0),
        &[c("Testosterone Cypionate", "Depo-Testosterone", C3)],
    ),
    class(
        "Anticoagulants",
        "8333",
        (0.05, 9.00),
        &[
            g("Apixaban", "Eliquis"),
            g("Rivaroxaban", "Xarelto"),
            g("Warfarin Sodium", "Coumadin"),
        ],
    ),
    class(
        "Glucocorticoids",
        "2210",
        (0.03, 0.90),
        &[
            g("Prednisone", "Deltasone"),
            g("Methylprednisolone", "Medrol"),
        ],
    ),
    class(
        "Antihistamines",
        "4150",
        (0.05, 0.60),
        &[
            g("Cetirizine Hydrochloride", "Zyrtec"),
            g("Loratadine", "Claritin"),
        ],
    ),
    DrugClass {
        name: "TNF Alpha Inhibitors",
        gpi_prefix: "6627",
        unit_price: (2_800.0, 7_500.0),
        specialty: true,
        generics: &[g("Adalimumab", "Humira"), g("Etanercept", "Enbrel")],
    },
];

/// Fictional labelers (the NDC's first segment is theirs).
pub(super) const MANUFACTURERS: &[&str] = &[
    "Northwind Pharmaceuticals",
    "Bluestone Generics",
    "Cedar Ridge Laboratories",
    "Harborline Pharma",
    "Meridian Therapeutics",
    "Silverleaf Labs",
    "Granite State Pharmaceuticals",
    "Aurora Valley Health",
    "Pinecrest Drug Company",
    "Lakeshore Biologics",
    "Redwood Pharma",
    "Summit Generics",
    "Coastal Rx Manufacturing",
    "Ironwood Laboratories",
    "Blue Heron Pharmaceuticals",
    "Westfield Medicines",
];

/// The class a generator's generic name belongs to: the class listing a generic with the
/// same first word (the order generator writes "Albuterol Sulfate HFA", the table too).
pub(super) fn class_of(generic_name: &str) -> Option<(usize, usize)> {
    let first = generic_name.split_whitespace().next()?.to_ascii_lowercase();
    CLASSES.iter().enumerate().find_map(|(ci, class)| {
        class
            .generics
            .iter()
            .position(|g| {
                g.name
                    .split([' ', '-'])
                    .next()
                    .is_some_and(|w| w.eq_ignore_ascii_case(&first))
            })
            .map(|gi| (ci, gi))
    })
}
