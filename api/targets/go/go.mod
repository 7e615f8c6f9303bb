module cronfence-target

go 1.19
