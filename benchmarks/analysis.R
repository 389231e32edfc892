# The analyst's R script that `registry analyze` is measured against (benchmarks/versus_r.py).
#
#   Rscript benchmarks/analysis.R table analysis_table.csv results.rds
#   Rscript benchmarks/analysis.R database registry.db results.rds settings.csv
#
# It does what `registry analyze` does with the default configuration: Table 1 (median and IQR or mean and SD,
# Mann-Whitney or Welch, chi-square or Fisher, standardised differences), mortality at 6 months and 1 year (crude,
# Kaplan-Meier with log-log limits, log-rank on truncated follow-up), Kaplan-Meier curves and medians by group,
# log-rank over full follow-up, Cox models of death within 365 days (unadjusted, adjusted, one per covariate;
# Efron ties) each with cox.zph, overall and in the RPILD subgroup; safety by Fisher's exact test. The results are
# saved as one R object, and the adjusted hazard ratio printed (the benchmark checks it equals the registry's).
#
# "table" starts from the analysis table the registry built (registry.cohort.build_cohort, written to CSV by the
# benchmark, untimed): R's best case. "database" starts where `registry analyze` starts: it reads the registry's
# SQLite file (DBI, RSQLite) and builds the analysis table itself as registry/cohort.py does (the index course,
# the exclusions, follow-up, baseline values nearest the index date, safety flags), with the code lists and
# settings of settings.csv (written by the benchmark from registry.codes and registry.config).
suppressPackageStartupMessages(library(survival))

from_table <- function(path) {
  data <- read.csv(path, stringsAsFactors = FALSE)
  for (column in c("event", "male", "ever_smoker", "steroid_sparing", "anti_mda5_grade")) {
    data[[column]] <- as.numeric(data[[column]])
  }
  for (column in grep("^(ae_|rpild$|discontinuation$|dead_by_|status_known_)", names(data), value = TRUE)) {
    data[[column]] <- as.integer(as.logical(data[[column]]))
  }
  data
}

from_database <- function(path, settings_path) {
  suppressPackageStartupMessages({
    library(DBI)
    library(RSQLite)
  })
  settings <- read.csv(settings_path, stringsAsFactors = FALSE)
  setting <- function(name) settings$value[settings$setting == name]
  window <- as.numeric(setting("baseline_window_days"))
  con <- dbConnect(SQLite(), path)
  on.exit(dbDisconnect(con))
  live <- function(table, columns) {
    sql <- sprintf("SELECT %s FROM %s WHERE deleted_at IS NULL", paste(columns, collapse = ", "), table)
    if (table != "patient") sql <- paste(sql, "AND patient_id NOT IN (SELECT id FROM patient WHERE deleted_at IS NOT NULL)")
    dbGetQuery(con, sql)
  }
  day <- function(x) as.numeric(as.Date(x))
  patient <- live("patient", c("id", "study_id", "sex", "birth_date", "smoking", "ild_diagnosis_date", "rpild"))
  treatment <- live("treatment", c("patient_id", "drug", "start_date", "end_date", "stop_reason"))
  antibody <- live("antibody_test", c("patient_id", "antibody", "sample_date", "grade", "value", "cutoff"))
  labs <- live("lab_result", c("patient_id", "analyte", "sample_date", "value"))
  pft <- live("pft", c("patient_id", "test_date", "fvc_pct_pred", "dlco_pct_pred", "tlc_pct_pred", "not_done_reason"))
  hrct <- live("hrct", c("patient_id", "scan_date", "pattern", "total_score"))
  events <- live("adverse_event", c("patient_id", "onset_date", "term", "ctcae_grade", "serious", "attributed_drug",
                                    "led_to_discontinuation"))
  follow <- live("follow_up", c("patient_id", "last_contact_date", "vital_status", "death_date"))

  # the index course: the first study drug started; both started on that day: the group cannot be decided
  study <- treatment[treatment$drug %in% c("tofacitinib", "tacrolimus"), ]
  study$start <- day(study$start_date)
  study <- study[order(study$patient_id, study$start), ]
  first <- !duplicated(study$patient_id)
  index <- data.frame(patient_id = study$patient_id[first], group = study$drug[first], index = study$start[first])
  on_first_day <- study$start == ave(study$start, study$patient_id, FUN = min)
  drugs_first_day <- tapply(study$drug[on_first_day], study$patient_id[on_first_day], function(x) length(unique(x)))
  index$same_day <- drugs_first_day[as.character(index$patient_id)] > 1

  # anti-MDA5: positive if graded weak or above, or a value at or above its cut-off (the ELISA's 32 without one)
  mda5 <- antibody[antibody$antibody == "anti_mda5" & antibody$patient_id %in% index$patient_id, ]
  cutoff <- ifelse(is.na(mda5$cutoff), 32, mda5$cutoff)
  mda5$positive <- mda5$grade %in% c("weak", "moderate", "strong") | (!is.na(mda5$value) & mda5$value >= cutoff)
  positive <- tapply(mda5$positive, mda5$patient_id, any)
  mda5$distance <- abs(day(mda5$sample_date) - index$index[match(mda5$patient_id, index$patient_id)])
  graded <- mda5[!is.na(mda5$grade), ]
  graded <- graded[order(graded$patient_id, graded$distance, day(graded$sample_date)), ]
  graded <- graded[!duplicated(graded$patient_id), ]
  grade <- setNames(c(negative = 0, weak = 1, moderate = 2, strong = 3)[graded$grade], graded$patient_id)

  # exclusions, the first reason counted
  reason <- rep(NA_character_, nrow(patient))
  exclude <- function(mask, why) reason[is.na(reason) & mask] <<- why
  ild <- day(patient$ild_diagnosis_date)
  exclude(!patient$id %in% index$patient_id, "no tofacitinib or tacrolimus course")
  exclude(patient$id %in% index$patient_id[index$same_day], "tofacitinib and tacrolimus started the same day")
  exclude(!patient$id %in% names(positive)[positive], "anti-MDA5 not positive or not tested")
  exclude(is.na(ild), "no ILD diagnosis date")
  exclude(!is.na(ild) & (ild < day(setting("enrolment_start")) | ild > day(setting("enrolment_end"))),
          "ILD diagnosed outside the enrolment window")
  exclude(!patient$id %in% follow$patient_id, "no follow-up (vital status) record")
  kept <- patient[is.na(reason), ]

  at <- match(kept$id, index$patient_id)
  d <- data.frame(patient_id = kept$id, study_id = kept$study_id, group = index$group[at], index = index$index[at])
  fu <- follow[match(kept$id, follow$patient_id), ]
  died <- fu$vital_status == "dead"
  d$event <- as.integer(died)
  d$time_days <- ifelse(died, day(fu$death_date), day(fu$last_contact_date)) - d$index
  for (days in c(183, 365)) {
    dead_by <- died & d$time_days <= days
    d[[paste0("dead_by_", days)]] <- as.integer(dead_by)
    d[[paste0("status_known_", days)]] <- as.integer(dead_by | d$time_days >= days)
  }
  d$age <- (d$index - day(kept$birth_date)) / 365.25
  d$male <- as.integer(kept$sex %in% "male")
  d$ever_smoker <- ifelse(is.na(kept$smoking), NA, as.numeric(kept$smoking %in% c("former", "current")))
  d$rpild <- as.integer(kept$rpild)
  d$anti_mda5_grade <- unname(grade[as.character(kept$id)])
  courses <- treatment[treatment$drug %in% setting("steroid_sparing_drug") & treatment$patient_id %in% d$patient_id, ]
  course_index <- d$index[match(courses$patient_id, d$patient_id)]
  ends <- day(courses$end_date)
  ends[is.na(ends)] <- Inf
  sparing_window <- as.numeric(setting("steroid_sparing_window_days"))
  overlaps <- day(courses$start_date) <= course_index + sparing_window & ends >= course_index - sparing_window
  d$steroid_sparing <- as.integer(d$patient_id %in% courses$patient_id[overlaps])

  # baseline values: per field, the first value of the records nearest the index date within the window
  nearest <- function(rows, date_column, columns) {
    rows <- rows[rows$patient_id %in% d$patient_id, ]
    rows$date <- day(rows[[date_column]])
    rows$distance <- abs(rows$date - d$index[match(rows$patient_id, d$patient_id)])
    rows <- rows[rows$distance <= window, ]
    rows <- rows[order(rows$patient_id, rows$distance, rows$date), ]
    lapply(setNames(columns, columns), function(column) {
      found <- rows[!is.na(rows[[column]]), ]
      found <- found[!duplicated(found$patient_id), ]
      found[[column]][match(d$patient_id, found$patient_id)]
    })
  }
  for (analyte in setting("analyte")) {
    d[[analyte]] <- nearest(labs[labs$analyte == analyte, ], "sample_date", "value")$value
  }
  for (found in list(list(nearest(pft, "test_date", c("fvc_pct_pred", "dlco_pct_pred", "tlc_pct_pred",
                                                       "not_done_reason")), "pft_"),
                     list(nearest(hrct, "scan_date", c("pattern", "total_score")), "hrct_"))) {
    for (name in names(found[[1]])) d[[paste0(found[[2]], name)]] <- found[[1]][[name]]
  }

  # safety: adverse events from the index date on; discontinuation of the index drug for one
  ev <- events[events$patient_id %in% d$patient_id, ]
  ev$group <- d$group[match(ev$patient_id, d$patient_id)]
  ev <- ev[day(ev$onset_date) >= d$index[match(ev$patient_id, d$patient_id)], ]
  d$ae_any <- as.integer(d$patient_id %in% ev$patient_id)
  severe <- ev$serious %in% 1 | (!is.na(ev$ctcae_grade) & ev$ctcae_grade >= 3)
  d$ae_serious_or_grade3 <- as.integer(d$patient_id %in% ev$patient_id[severe])
  for (term in setting("adverse_event_term")) {
    d[[paste0("ae_", term)]] <- as.integer(d$patient_id %in% ev$patient_id[ev$term %in% term])
  }
  courses <- treatment[treatment$patient_id %in% d$patient_id, ]
  at <- match(courses$patient_id, d$patient_id)
  index_course <- courses[courses$drug == d$group[at] & day(courses$start_date) == d$index[at], ]
  stopped <- index_course$patient_id[index_course$stop_reason %in% "adverse_event"]
  attributed <- ev$patient_id[ev$led_to_discontinuation %in% 1 & !is.na(ev$attributed_drug) &
                                ev$attributed_drug == ev$group]
  d$discontinuation <- as.integer(d$patient_id %in% c(stopped, attributed))
  d
}

args <- commandArgs(trailingOnly = TRUE)
data <- if (args[1] == "table") from_table(args[2]) else from_database(args[2], args[4])
landmarks <- c("6 months" = 183, "1 year" = 365)
covariates <- c("age", "male", "ever_smoker", "anti_mda5_grade", "steroid_sparing")
continuous <- c("age", "ferritin", "ldh", "crp", "kl6", "lymphocytes", "ck", "albumin", "pft_fvc_pct_pred",
                "pft_dlco_pct_pred", "hrct_total_score")
categorical <- c("male", "ever_smoker", "rpild", "anti_mda5_grade", "steroid_sparing", "hrct_pattern")

truncated <- function(d, days) {
  d$event <- as.integer(d$event == 1 & d$time_days <= days)
  d$time_days <- pmin(d$time_days, days)
  d
}

baseline <- function(d) {
  rows <- list()
  for (v in continuous) {
    x <- d[[v]]
    by <- split(x, d$group)
    test <- if (v == "age") t.test(x ~ d$group)$p.value else wilcox.test(x ~ d$group, exact = FALSE)$p.value
    summaries <- lapply(by, function(g) c(quantile(g, c(0.25, 0.5, 0.75), na.rm = TRUE), mean(g, na.rm = TRUE),
                                          sd(g, na.rm = TRUE), sum(is.na(g))))
    smd <- diff(sapply(by, mean, na.rm = TRUE)) / sqrt(mean(sapply(by, var, na.rm = TRUE)))
    rows[[v]] <- list(summaries = summaries, p = test, smd = smd)
  }
  for (v in categorical) {
    counts <- table(d[[v]], d$group)
    expected <- suppressWarnings(chisq.test(counts, correct = FALSE)$expected)
    test <- if (any(expected < 5)) fisher.test(counts)$p.value else chisq.test(counts, correct = FALSE)$p.value
    rows[[v]] <- list(counts = counts, percent = prop.table(counts, 2), p = test)
  }
  rows
}

analyses <- function(d) {
  out <- list(patients = table(d$group))
  for (name in names(landmarks)) {
    days <- landmarks[[name]]
    known <- d[[paste0("status_known_", days)]] == 1
    dead <- d[[paste0("dead_by_", days)]] == 1
    km <- summary(survfit(Surv(time_days, event) ~ group, data = d, conf.type = "log-log"), times = days,
                  extend = TRUE)
    test <- survdiff(Surv(time_days, event) ~ group, data = truncated(d, days))
    out[[name]] <- list(deaths = tapply(dead & known, d$group, sum), known = tapply(known, d$group, sum),
                        km = 1 - km$surv, lower = 1 - km$upper, upper = 1 - km$lower,
                        p = pchisq(test$chisq, length(test$n) - 1, lower.tail = FALSE))
  }
  fit <- survfit(Surv(time_days, event) ~ group, data = d, conf.type = "log-log")
  out$curves <- summary(fit)
  out$median <- quantile(fit, 0.5)
  out$log_rank <- survdiff(Surv(time_days, event) ~ group, data = d)
  model_data <- truncated(d, max(landmarks))
  model_data$tofacitinib <- as.integer(model_data$group == "tofacitinib")
  cox <- function(terms) {
    formula <- as.formula(paste("Surv(time_days, event) ~", paste(terms, collapse = " + ")))
    model <- coxph(formula, data = model_data, ties = "efron")
    list(coefficients = summary(model)$coefficients, limits = summary(model)$conf.int, zph = cox.zph(model)$table)
  }
  out$cox <- c(list(unadjusted = cox("tofacitinib"), adjusted = cox(c("tofacitinib", covariates))),
               lapply(setNames(covariates, covariates), cox))
  out
}

safety <- function(d) {
  outcomes <- c(grep("^ae_", names(d), value = TRUE), "discontinuation")
  lapply(setNames(outcomes, outcomes), function(o) {
    counts <- table(factor(d[[o]], levels = 0:1), d$group)
    list(counts = counts, p = fisher.test(counts)$p.value)
  })
}

results <- list(
  baseline = baseline(data),
  overall = analyses(data),
  rpild = analyses(data[data$rpild == 1, ]),
  safety = safety(data)
)
saveRDS(results, args[3])
adjusted <- results$overall$cox$adjusted$limits
cat(sprintf("%d patients analysed, adjusted HR tofacitinib %.6f (%.6f-%.6f)\n", nrow(data), adjusted[1, 1],
            adjusted[1, 3], adjusted[1, 4]))
