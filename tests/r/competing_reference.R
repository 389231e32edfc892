# Competing-risks references from R's survival package for tests/test_competing.py.
#
# Run from the repository root:  Rscript tests/r/competing_reference.R
# It writes, beside itself, with 17 significant digits:
#   competing_cases.csv      the data (case, group, time, status: 0 censored, 1 death, 2 lung transplantation): seeded
#                            random cohorts of two groups, whole days (ties of every kind), and a case with deaths,
#                            transplants and censorings on the same days; synthetic
#   competing_curves.csv     survfit(Surv(time, factor(status, 0:2)) ~ group, conf.type = ...) per case, conf.type,
#                            group and time: n.risk, and per state (death, transplant) pstate, std.err (R's
#                            infinitesimal jackknife for a multi-state curve), lower, upper
#   competing_landmarks.csv  summary(fit, times = c(3, 183, 365), extend = TRUE) of the same fits per case, conf.type
#                            and group, and the crude Kaplan-Meier of survfit(Surv(time, status == 1) ~ group) there
#   competing_reference.version  R's and survival's versions
# conf.type "log" is R's default for a multi-state survfit (fit$conf.type without the argument); the limits are
# survfit_confint's on the probability itself (logse = FALSE: the standard error divided by the probability).
library(survival)

here <- dirname(normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))))
g17 <- function(x) ifelse(is.na(x), "NA", sprintf("%.17g", x))
LANDMARKS <- c(3, 183, 365)
CONF_TYPES <- c("log", "log-log", "plain")

set.seed(20261205)
cases <- list()
for (n in c(60, 300, 800)) {
  group <- sample(c("tacrolimus", "tofacitinib"), n, replace = TRUE)
  death <- ceiling(rexp(n, ifelse(group == "tofacitinib", 0.003, 0.005)))
  transplant <- ceiling(rexp(n, 0.0006))
  censor <- sample(20:500, n, replace = TRUE)
  time <- pmin(death, transplant, censor)
  status <- ifelse(time == censor & censor < pmin(death, transplant), 0L, ifelse(death <= transplant, 1L, 2L))
  cases[[paste0("random_", n)]] <- data.frame(group, time, status)
}
# every kind of tie at one time: deaths, transplants and censorings on days 10 and 20 (tacrolimus) and 10 and 40
# (tofacitinib)
cases$ties <- data.frame(
  group = rep(c("tacrolimus", "tofacitinib"), c(13, 9)),
  time = c(5, 10, 10, 10, 10, 10, 20, 20, 20, 20, 30, 40, 40, 10, 10, 10, 10, 40, 40, 40, 40, 50),
  status = c(1, 1, 1, 2, 0, 0, 2, 2, 1, 0, 1, 2, 0, 2, 1, 0, 0, 1, 2, 2, 0, 1)
)
inputs <- do.call(rbind, lapply(names(cases), function(name) data.frame(case = name, cases[[name]])))
write.csv(inputs, file.path(here, "competing_cases.csv"), row.names = FALSE, quote = FALSE)

stratum <- function(strata) sub("^group=", "", rep(names(strata), strata))
curves <- list()
landmarks <- list()
for (name in names(cases)) {
  for (conf_type in CONF_TYPES) {
    fit <- survfit(Surv(time, factor(status, 0:2)) ~ group, data = cases[[name]], conf.type = conf_type)
    stopifnot(fit$conf.type == conf_type)
    death <- match("1", fit$states)
    transplant <- match("2", fit$states)
    curves[[length(curves) + 1]] <- data.frame(
      case = name, conf_type = conf_type, group = stratum(fit$strata), time = fit$time, n_risk = fit$n.risk[, 1],
      death = g17(fit$pstate[, death]), death_std_err = g17(fit$std.err[, death]),
      death_lower = g17(fit$lower[, death]), death_upper = g17(fit$upper[, death]),
      transplant = g17(fit$pstate[, transplant]), transplant_std_err = g17(fit$std.err[, transplant]),
      transplant_lower = g17(fit$lower[, transplant]), transplant_upper = g17(fit$upper[, transplant])
    )
    at <- summary(fit, times = LANDMARKS, extend = TRUE)
    km <- summary(survfit(Surv(time, status == 1) ~ group, data = cases[[name]], conf.type = conf_type),
                  times = LANDMARKS, extend = TRUE)
    stopifnot(identical(as.character(at$strata), as.character(km$strata)), identical(at$time, km$time))
    landmarks[[length(landmarks) + 1]] <- data.frame(
      case = name, conf_type = conf_type, group = sub("^group=", "", as.character(at$strata)), days = at$time,
      death = g17(at$pstate[, death]), death_std_err = g17(at$std.err[, death]),
      death_lower = g17(at$lower[, death]), death_upper = g17(at$upper[, death]),
      transplant = g17(at$pstate[, transplant]), transplant_std_err = g17(at$std.err[, transplant]),
      transplant_lower = g17(at$lower[, transplant]), transplant_upper = g17(at$upper[, transplant]),
      km_surv = g17(km$surv)
    )
  }
}
write.csv(do.call(rbind, curves), file.path(here, "competing_curves.csv"), row.names = FALSE, quote = FALSE)
write.csv(do.call(rbind, landmarks), file.path(here, "competing_landmarks.csv"), row.names = FALSE, quote = FALSE)
default <- survfit(Surv(time, factor(status, 0:2)) ~ group, data = cases$ties)
stopifnot(default$conf.type == "log")
cat(R.version.string, "; survival", format(packageVersion("survival")), "\n",
    file = file.path(here, "competing_reference.version"))
