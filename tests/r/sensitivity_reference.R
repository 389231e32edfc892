# Propensity-score weighting references from R (stats::glm, survival) for tests/test_sensitivity_reference.py.
#
# Run from the repository root:  Rscript tests/r/sensitivity_reference.R
# (tests/r/sensitivity_demo.csv, the demo cohort's Cox data, is written by tests/r/sensitivity_data.py.)
# It writes, beside itself, with 17 significant digits:
#   sensitivity_cases.csv       the data: the demo cohort and seeded random cohorts (synthetic)
#   sensitivity_propensity.csv  glm(tofacitinib ~ age + male + ever_smoker + anti_mda5_grade + rpild, binomial):
#                               coefficients, se, Wald p (run to convergence: epsilon 1e-14)
#   sensitivity_weights.csv     per patient: propensity score and weights (iptw, overlap, iptw truncated at the 95th
#                               percentile of each group, quantile type 7)
#   sensitivity_balance.csv     standardised mean differences and variance ratios, cobalt's conventions written out
#                               (cobalt is not in Debian): weighted mean difference over the unweighted pooled SD
#                               sqrt((s1^2 + s0^2) / 2), binary covariates with s^2 = p(1 - p); variance ratios of
#                               continuous covariates, weighted variances with the bias correction
#                               sum(w) / (sum(w)^2 - sum(w^2)); Kish's effective sample size per group
#   sensitivity_km.csv          survfit(Surv(time_days, event) ~ 1, weights = w, conf.type = "log-log") per group at
#                               183 and 365 days (robust, infinitesimal-jackknife standard errors: R's default for
#                               weights that are not whole numbers)
#   sensitivity_cox.csv         coxph(Surv(cox_time, cox_event) ~ tofacitinib, weights = w, robust = TRUE) per
#                               weighting; "doubly_robust": the iptw weights and the adjusted model's covariates
library(survival)

here <- dirname(normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))))
g17 <- function(x) ifelse(is.na(x), "NA", sprintf("%.17g", x))
ps_covariates <- c("age", "male", "ever_smoker", "anti_mda5_grade", "rpild")
adjusted <- c("age", "male", "ever_smoker", "anti_mda5_grade", "steroid_sparing")

cases <- list(demo = read.csv(file.path(here, "sensitivity_demo.csv"))[, c(
  "time_days", "event", "cox_time", "cox_event", "tofacitinib", ps_covariates, "steroid_sparing")])
set.seed(20261204)
for (n in c(300, 800)) {
  age <- round(rnorm(n, 52, 11), 1)
  male <- rbinom(n, 1, 0.35)
  ever_smoker <- rbinom(n, 1, 0.25)
  anti_mda5_grade <- sample(1:3, n, replace = TRUE, prob = c(0.2, 0.3, 0.5))
  rpild <- rbinom(n, 1, 0.55)
  steroid_sparing <- rbinom(n, 1, 0.4)
  tofacitinib <- rbinom(n, 1, plogis(0.8 - 0.02 * (age - 52) + 0.3 * male - 0.7 * (anti_mda5_grade - 2) - 0.5 * rpild))
  hazard <- 0.004 * exp(-0.6 * tofacitinib + 0.03 * (age - 52) + 0.3 * male + 0.4 * (anti_mda5_grade - 2) + 0.8 * rpild)
  death <- ceiling(rexp(n, hazard))
  censor <- sample(30:700, n, replace = TRUE)
  time_days <- pmin(death, censor)
  event <- as.integer(death <= censor)
  cox_time <- pmin(time_days, 365)
  cox_event <- as.integer(event == 1 & time_days <= 365)
  cases[[paste0("random_", n)]] <- data.frame(time_days, event, cox_time, cox_event, tofacitinib, age, male,
                                              ever_smoker, anti_mda5_grade, rpild, steroid_sparing)
}
inputs <- do.call(rbind, lapply(names(cases), function(name) data.frame(case = name, cases[[name]])))
write.csv(data.frame(lapply(inputs, function(x) if (is.numeric(x)) g17(x) else x)),
          file.path(here, "sensitivity_cases.csv"), row.names = FALSE, quote = FALSE)

variance <- function(x, w, binary) {
  m <- sum(w * x) / sum(w)
  if (binary) return(m * (1 - m))
  sum(w * (x - m)^2) * sum(w) / (sum(w)^2 - sum(w^2))
}
out <- list(propensity = list(), weights = list(), balance = list(), km = list(), cox = list())
add <- function(part, frame) out[[part]][[length(out[[part]]) + 1]] <<- frame
for (name in names(cases)) {
  d <- cases[[name]]
  fit <- glm(reformulate(ps_covariates, "tofacitinib"), family = binomial, data = d,
             control = glm.control(epsilon = 1e-14, maxit = 100))
  s <- summary(fit)$coefficients
  add("propensity", data.frame(case = name, term = rownames(s), coef = g17(s[, 1]), se = g17(s[, 2]),
                               p = g17(s[, 4])))
  ps <- fitted(fit)
  treated <- d$tofacitinib == 1
  share <- mean(treated)
  iptw <- ifelse(treated, share / ps, (1 - share) / (1 - ps))
  cap <- function(w) {
    for (g in c(TRUE, FALSE)) w[treated == g] <- pmin(w[treated == g], quantile(w[treated == g], 0.95, type = 7))
    w
  }
  weightings <- list(iptw = iptw, overlap = ifelse(treated, 1 - ps, ps), iptw_truncated_95 = cap(iptw))
  add("weights", data.frame(case = name, row = seq_len(nrow(d)), ps = g17(ps), iptw = g17(weightings$iptw),
                            overlap = g17(weightings$overlap), iptw_truncated_95 = g17(weightings$iptw_truncated_95)))
  for (weighting in names(weightings)) {
    w <- weightings[[weighting]]
    for (covariate in ps_covariates) {
      x <- d[[covariate]]
      binary <- all(x %in% c(0, 1))
      pooled <- sqrt((variance(x[treated], rep(1, sum(treated)), binary) +
                        variance(x[!treated], rep(1, sum(!treated)), binary)) / 2)
      smd <- function(w) (sum(w[treated] * x[treated]) / sum(w[treated]) -
                            sum(w[!treated] * x[!treated]) / sum(w[!treated])) / pooled
      ratio <- function(w) if (binary) NA else variance(x[treated], w[treated], FALSE) /
        variance(x[!treated], w[!treated], FALSE)
      ones <- rep(1, nrow(d))
      add("balance", data.frame(case = name, weighting = weighting, covariate = covariate, binary = binary,
                                smd_before = g17(smd(ones)), smd_after = g17(smd(w)), vr_before = g17(ratio(ones)),
                                vr_after = g17(ratio(w)), ess_tofacitinib = g17(sum(w[treated])^2 / sum(w[treated]^2)),
                                ess_tacrolimus = g17(sum(w[!treated])^2 / sum(w[!treated]^2))))
    }
    for (g in c(1, 0)) {
      km <- survfit(Surv(time_days, event) ~ 1, data = d[d$tofacitinib == g, ], weights = w[d$tofacitinib == g],
                    conf.type = "log-log")
      at <- summary(km, times = c(183, 365), extend = TRUE)
      add("km", data.frame(case = name, weighting = weighting, group = ifelse(g == 1, "tofacitinib", "tacrolimus"),
                           days = c(183, 365), surv = g17(at$surv), std_err = g17(at$std.err),
                           lower = g17(at$lower), upper = g17(at$upper)))
    }
    models <- list(weighting = "tofacitinib")
    names(models) <- weighting
    if (weighting == "iptw") models$doubly_robust <- c("tofacitinib", adjusted)
    for (model in names(models)) {
      fit <- coxph(reformulate(models[[model]], "Surv(cox_time, cox_event)"), data = cbind(d, w = w), weights = w,
                   robust = TRUE, ties = "efron")
      s <- summary(fit)
      add("cox", data.frame(case = name, model = model, term = rownames(s$coefficients),
                            coef = g17(s$coefficients[, "coef"]), se = g17(s$coefficients[, "robust se"]),
                            hr = g17(s$conf.int[, "exp(coef)"]), lower = g17(s$conf.int[, "lower .95"]),
                            upper = g17(s$conf.int[, "upper .95"]), p = g17(s$coefficients[, "Pr(>|z|)"])))
    }
  }
}
for (part in names(out)) {
  write.csv(do.call(rbind, out[[part]]), file.path(here, paste0("sensitivity_", part, ".csv")), row.names = FALSE,
            quote = FALSE)
}
cat(R.version.string, "; survival", format(packageVersion("survival")), "\n",
    file = file.path(here, "sensitivity_reference.version"))
