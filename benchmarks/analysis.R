# The analyst's R script that `registry analyze` is measured against (benchmarks/versus_r.py).
#
#   Rscript benchmarks/analysis.R analysis_table.csv results.rds
#
# It does what `registry analyze` does with the default configuration, from the analysis table (one row per
# patient, as registry.cohort.build_cohort makes it, written to CSV by the benchmark, untimed): Table 1 (median
# and IQR or mean and SD, Mann-Whitney or Welch, chi-square or Fisher, standardised differences), mortality at 6
# months and 1 year (crude, Kaplan-Meier with log-log limits, log-rank on truncated follow-up), Kaplan-Meier curves
# and medians by group, log-rank over full follow-up, Cox models of death within 365 days (unadjusted, adjusted,
# one per covariate; Efron ties) each with cox.zph, overall and in the RPILD subgroup; safety by Fisher's exact
# test. The results are saved as one R object. The registry starts from the database instead and builds the
# analysis table itself, so the comparison favours R.
suppressPackageStartupMessages(library(survival))

args <- commandArgs(trailingOnly = TRUE)
data <- read.csv(args[1], stringsAsFactors = FALSE)
for (column in c("event", "male", "ever_smoker", "steroid_sparing", "anti_mda5_grade")) {
  data[[column]] <- as.numeric(data[[column]])
}
for (column in grep("^(ae_|rpild$|discontinuation$|dead_by_|status_known_)", names(data), value = TRUE)) {
  data[[column]] <- as.integer(as.logical(data[[column]]))
}
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
saveRDS(results, args[2])
cat(sprintf("adjusted HR tofacitinib %.3f, p = %.3g (%d patients)\n", results$overall$cox$adjusted$limits[1, 1],
            results$overall$cox$adjusted$coefficients[1, 5], nrow(data)))
