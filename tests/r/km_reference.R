# Kaplan-Meier references from R's survival package for tests/test_km_reference.py.
#
# Run from the repository root:  Rscript tests/r/km_reference.R
# It writes, beside itself:
#   km_cases.csv      the data (case, time, event): hand-made edge cases and seeded random cohorts
#   km_curves.csv     survfit's table per case and conf.type (every time: n.risk, n.event, surv, std.err, lower, upper)
#   km_medians.csv    quantile(fit, 0.5) per case and conf.type (median, lower, upper)
#   km_landmarks.csv  summary(fit, times = c(183, 365), extend = TRUE) per case and conf.type
# Numbers are written with 17 significant digits; NA where R gives NA. The data are synthetic.
library(survival)

here <- dirname(normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))))
g17 <- function(x) ifelse(is.na(x), "NA", sprintf("%.17g", x))

cases <- list(
  # deaths on days 1-4 of four patients: S is 0.5 on [2, 3), R's median is the midpoint 2.5, its upper limit NA
  four_deaths = data.frame(time = c(1, 2, 3, 4), event = c(1, 1, 1, 1)),
  # nobody dies: S is 1 throughout, no median, log-log limits NA (mortality 0 %)
  no_deaths = data.frame(time = c(30, 90, 200, 400), event = c(0, 0, 0, 0)),
  # everybody dies: S reaches 0 (mortality 100 %), limits NA there
  all_die = data.frame(time = c(10, 20, 20, 50, 80), event = c(1, 1, 1, 1, 1)),
  # S exactly 0.5 after the second of four deaths, then a censoring, then the last death
  half_then_censored = data.frame(time = c(5, 9, 12, 20, 31, 40), event = c(1, 1, 1, 0, 1, 0)),
  # the curve ends at 0.5 exactly (the last point is 0.5): R's median is the midpoint of that time and the last
  ends_at_half = data.frame(time = c(3, 8, 15, 15), event = c(1, 1, 0, 0))
)
set.seed(20261203)
for (n in c(8, 25, 61, 200, 1000)) {
  time <- sample(1:500, n, replace = TRUE)  # many ties, as whole days give
  event <- rbinom(n, 1, 0.6)
  cases[[paste0("random_", n)]] <- data.frame(time = time, event = event)
}

# the demo cohort (fixtures/demo, synthetic): follow-up of its analysis table by group, and in the RPILD subgroup;
# demo_survival.csv is written by tests/test_km_reference.py::test_the_demo_cohort_file_is_the_analysis_table
demo <- read.csv(file.path(here, "demo_survival.csv"))
for (group in sort(unique(demo$group))) {
  rows <- demo[demo$group == group, ]
  cases[[paste0("demo_", group)]] <- data.frame(time = rows$time_days, event = rows$event)
  rows <- rows[rows$rpild == 1, ]
  cases[[paste0("demo_rpild_", group)]] <- data.frame(time = rows$time_days, event = rows$event)
}

inputs <- do.call(rbind, lapply(names(cases), function(name) data.frame(case = name, cases[[name]])))
write.csv(inputs, file.path(here, "km_cases.csv"), row.names = FALSE, quote = FALSE)

curves <- list(); medians <- list(); landmarks <- list()
for (name in names(cases)) {
  data <- cases[[name]]
  for (type in c("log", "log-log", "plain")) {
    fit <- survfit(Surv(time, event) ~ 1, data = data, conf.type = type)
    curves[[length(curves) + 1]] <- data.frame(
      case = name, conf_type = type, time = g17(fit$time), n_risk = fit$n.risk, n_event = fit$n.event,
      surv = g17(fit$surv), std_err = g17(fit$std.err), lower = g17(fit$lower), upper = g17(fit$upper)
    )
    q <- quantile(fit, 0.5)
    medians[[length(medians) + 1]] <- data.frame(
      case = name, conf_type = type, median = g17(unname(q$quantile)), lower = g17(unname(q$lower)),
      upper = g17(unname(q$upper))
    )
    s <- summary(fit, times = c(183, 365), extend = TRUE)
    landmarks[[length(landmarks) + 1]] <- data.frame(
      case = name, conf_type = type, t = s$time, surv = g17(s$surv), lower = g17(s$lower), upper = g17(s$upper)
    )
  }
}
write.csv(do.call(rbind, curves), file.path(here, "km_curves.csv"), row.names = FALSE, quote = FALSE)
write.csv(do.call(rbind, medians), file.path(here, "km_medians.csv"), row.names = FALSE, quote = FALSE)
write.csv(do.call(rbind, landmarks), file.path(here, "km_landmarks.csv"), row.names = FALSE, quote = FALSE)
cat(R.version.string, "; survival", format(packageVersion("survival")), "\n",
    file = file.path(here, "km_reference.version"))
