from covidct.cli.main import main

main()
