# Rubin's rules from R's mice::pool for tests/test_imputation.py, on the data sets our imputation made.
#
# Run from the repository root:  Rscript tests/r/imputation_reference.R
# (tests/r/imputation_datasets.csv is written by tests/r/imputation_datasets.py.)
# Per case, a coxph(Surv(cox_time, cox_event) ~ ..., ties = "efron") in each imputed data set, pooled with
# mice::pool(as.mira(fits)); writes imputation_pooled.csv with summary(pool, conf.int = TRUE) (estimate, std.error,
# statistic, df, p.value, 2.5 %, 97.5 %) and the pool's ubar, b, t, dfcom, riv, lambda, fmi (17 significant digits).
library(survival)
library(mice)

here <- dirname(normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))))
g17 <- function(x) ifelse(is.na(x), "NA", sprintf("%.17g", x))
data <- read.csv(file.path(here, "imputation_datasets.csv"))
covariates <- c("tofacitinib", "age", "male", "ever_smoker", "anti_mda5_grade", "steroid_sparing",
                "pft_fvc_pct_pred", "pft_dlco_pct_pred")
formula <- reformulate(covariates, "Surv(cox_time, cox_event)")
out <- list()
for (name in unique(data$case)) {
  rows <- data[data$case == name, ]
  fits <- lapply(sort(unique(rows$imputation)), function(i) coxph(formula, data = rows[rows$imputation == i, ],
                                                                   ties = "efron"))
  pooled <- pool(as.mira(fits))
  s <- summary(pooled, conf.int = TRUE)
  p <- pooled$pooled
  out[[name]] <- data.frame(case = name, term = as.character(s$term), m = p$m, estimate = g17(s$estimate),
                            std_error = g17(s$std.error), df = g17(s$df), p = g17(s$p.value),
                            lower = g17(s[["2.5 %"]]), upper = g17(s[["97.5 %"]]), ubar = g17(p$ubar), b = g17(p$b),
                            t = g17(p$t), dfcom = p$dfcom, riv = g17(p$riv), lambda = g17(p$lambda), fmi = g17(p$fmi))
}
write.csv(do.call(rbind, out), file.path(here, "imputation_pooled.csv"), row.names = FALSE, quote = FALSE)
cat(R.version.string, "; survival", format(packageVersion("survival")), "; mice", format(packageVersion("mice")), "\n",
    file = file.path(here, "imputation_reference.version"))
